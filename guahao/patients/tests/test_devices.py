"""Signed-in devices: logout and ending a device take effect on the very next request; tokens die
after 30 days unused and 90 days after sign-in; staff can sign an account out everywhere."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.test import Client

from guahao import clock
from guahao.console.testing import superuser_client
from guahao.patients.models import AuthToken
from guahao.testing import make_account, make_phone

pytestmark = pytest.mark.django_db


def _sign_in(phone: str, sms_outbox, *, user_agent: str, ip: str = "203.0.113.30") -> str:
    client = Client(REMOTE_ADDR=ip)
    client.post("/api/v1/auth/sms-code", json.dumps({"phone": phone}), content_type="application/json")
    answer = client.post(
        "/api/v1/auth/login",
        json.dumps({"phone": phone, "code": sms_outbox.last_code(phone)}),
        content_type="application/json",
        headers={"User-Agent": user_agent},
    )
    assert answer.status_code == 200, answer.content
    return answer.json()["token"]


def _as(token: str) -> Client:
    client = Client(REMOTE_ADDR="203.0.113.31")
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def test_logout_ends_the_token_at_once(sms_outbox) -> None:
    token = _sign_in(make_phone(), sms_outbox, user_agent="WeChat/8.0 iPhone")
    me = _as(token)
    assert me.get("/api/v1/patients").status_code == 200

    assert me.post("/api/v1/auth/logout").status_code == 204
    assert me.get("/api/v1/patients").status_code == 401
    assert me.post("/api/v1/auth/logout").status_code == 401


def test_an_account_lists_and_ends_its_devices(sms_outbox) -> None:
    phone = make_phone()
    with clock.travel(dt.timedelta(minutes=-10)):
        phone_token = _sign_in(phone, sms_outbox, user_agent="WeChat/8.0 iPhone")
    laptop_token = _sign_in(phone, sms_outbox, user_agent="Mozilla/5.0 (Windows NT 10.0)")

    devices = _as(laptop_token).get("/api/v1/auth/tokens").json()
    assert [d["user_agent"] for d in devices] == ["Mozilla/5.0 (Windows NT 10.0)", "WeChat/8.0 iPhone"]
    assert [d["current"] for d in devices] == [True, False]
    assert all(d["created_at"] and d["last_used_at"] for d in devices)

    phone_id = devices[1]["id"]
    assert _as(laptop_token).delete(f"/api/v1/auth/tokens/{phone_id}").status_code == 204
    assert _as(phone_token).get("/api/v1/patients").status_code == 401
    assert _as(laptop_token).get("/api/v1/patients").status_code == 200


def test_another_accounts_device_is_answered_like_a_missing_one(sms_outbox) -> None:
    mine = _sign_in(make_phone(), sms_outbox, user_agent="mine")
    theirs = _sign_in(make_phone(), sms_outbox, user_agent="theirs", ip="203.0.113.40")
    their_id = AuthToken.objects.get(user_agent="theirs").pk

    answer = _as(mine).delete(f"/api/v1/auth/tokens/{their_id}")
    assert answer.status_code == 404
    assert answer.json() == {"code": "token_not_found", "message": "登录设备不存在"}
    assert _as(mine).delete("/api/v1/auth/tokens/999999999").json() == answer.json()
    assert _as(theirs).get("/api/v1/patients").status_code == 200


def test_a_token_dies_after_thirty_days_unused(sms_outbox) -> None:
    token = _sign_in(make_phone(), sms_outbox, user_agent="phone")
    with clock.travel(dt.timedelta(days=29, hours=23)):
        assert _as(token).get("/api/v1/patients").status_code == 200
    # Used a day before it would have lapsed: thirty more days from that use.
    with clock.travel(dt.timedelta(days=59, hours=22)):
        assert _as(token).get("/api/v1/patients").status_code == 200
    with clock.travel(dt.timedelta(days=90, hours=1)):
        assert _as(token).get("/api/v1/patients").status_code == 401


def test_a_token_used_every_day_still_dies_ninety_days_after_sign_in(sms_outbox) -> None:
    token = _sign_in(make_phone(), sms_outbox, user_agent="phone")
    for day in range(10, 90, 10):
        with clock.travel(dt.timedelta(days=day)):
            assert _as(token).get("/api/v1/patients").status_code == 200
    with clock.travel(dt.timedelta(days=90, minutes=1)):
        assert _as(token).get("/api/v1/patients").status_code == 401


def test_staff_sign_an_account_out_everywhere(sms_outbox) -> None:
    phone = make_phone()
    tokens = []
    for n in range(2):
        with clock.travel(dt.timedelta(minutes=2 * n)):  # one code a minute per phone
            tokens.append(_sign_in(phone, sms_outbox, user_agent=f"device {n}"))
    bystander = _sign_in(make_phone(), sms_outbox, user_agent="someone else")
    account = AuthToken.objects.get(user_agent="device 0").account
    operator = superuser_client("ops")

    answer = operator.post(
        "/admin/patients/account/",
        {"action": "end_all_tokens", "_selected_action": [account.pk]},
        follow=True,
    )
    assert "已结束 1 个账号的 2 个登录" in answer.content.decode()
    for token in tokens:
        assert _as(token).get("/api/v1/patients").status_code == 401
    assert _as(bystander).get("/api/v1/patients").status_code == 200


def test_a_tokens_use_is_written_at_most_every_few_minutes(sms_outbox) -> None:
    token = _sign_in(make_phone(), sms_outbox, user_agent="phone")
    first = AuthToken.objects.get().last_used_at
    _as(token).get("/api/v1/patients")
    assert AuthToken.objects.get().last_used_at == first
    with clock.travel(dt.timedelta(minutes=6)):
        _as(token).get("/api/v1/patients")
    assert AuthToken.objects.get().last_used_at > first
    assert make_account()  # another account's sign-in changes nothing here
