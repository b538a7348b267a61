"""Sign-in under attack, through the API: codes and login attempts limited per address and per
network, a stranger's wrong codes never lock the owner out, and the image captcha a hospital may
switch on."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from captcha.models import CaptchaStore
from django.test import Client

from guahao import clock
from guahao.testing import make_phone

pytestmark = pytest.mark.django_db

ATTACKER = "198.51.100.66"
OWNER = "203.0.113.20"


def _post(path: str, body: dict, *, ip: str, **headers: str):
    return Client(REMOTE_ADDR=ip).post(
        path, json.dumps(body), content_type="application/json", headers=headers
    )


def ask_code(phone: str, *, ip: str, **body: str):
    return _post("/api/v1/auth/sms-code", {"phone": phone, **body}, ip=ip)


def sign_in(phone: str, code: str, *, ip: str, user_agent: str = "test-phone"):
    return _post(
        "/api/v1/auth/login", {"phone": phone, "code": code}, ip=ip, **{"User-Agent": user_agent}
    )


def test_codes_from_one_address_stop_at_the_limit_with_retry_after(sms_outbox) -> None:
    answers = [ask_code(make_phone(), ip=ATTACKER) for _ in range(12)]

    assert [a.status_code for a in answers] == [200] * 10 + [429] * 2
    refused = answers[-1]
    assert refused.json()["code"] == "rate_limited"
    assert "获取验证码过于频繁" in refused.json()["message"]
    assert 0 < int(refused["Retry-After"]) <= 3600
    assert len(sms_outbox.sent) == 10
    # Another address is not affected.
    assert ask_code(make_phone(), ip=OWNER).status_code == 200


def test_codes_from_one_network_are_limited_too(settings, sms_outbox) -> None:
    settings.LIMITS = {**settings.LIMITS, "sms_code_net": "4/h"}
    answers = [ask_code(make_phone(), ip=f"198.51.100.{n}") for n in range(1, 6)]
    assert [a.status_code for a in answers] == [200] * 4 + [429]
    assert ask_code(make_phone(), ip="198.51.101.1").status_code == 200  # the next /24


def test_forged_forwarded_for_does_not_escape_the_limit(settings, sms_outbox) -> None:
    settings.TRUSTED_PROXIES = []
    settings.LIMITS = {**settings.LIMITS, "sms_code_ip": "2/h"}
    answers = [
        Client(REMOTE_ADDR=ATTACKER).post(
            "/api/v1/auth/sms-code",
            json.dumps({"phone": make_phone()}),
            content_type="application/json",
            headers={"X-Forwarded-For": f"192.0.2.{n}"},
        )
        for n in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 429]


def test_behind_a_trusted_proxy_each_patient_counts_on_their_own(settings, sms_outbox) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    settings.LIMITS = {**settings.LIMITS, "sms_code_ip": "1/h"}
    for n in range(3):
        answer = Client(REMOTE_ADDR="10.0.0.5").post(
            "/api/v1/auth/sms-code",
            json.dumps({"phone": make_phone()}),
            content_type="application/json",
            headers={"X-Forwarded-For": f"192.0.2.{n}"},
        )
        assert answer.status_code == 200


def test_a_strangers_wrong_codes_do_not_lock_the_owner_out(sms_outbox) -> None:
    phone = make_phone()
    assert ask_code(phone, ip=OWNER).status_code == 200
    for wrong in range(5):
        answer = sign_in(phone, f"{wrong:06d}", ip=ATTACKER)
        assert answer.status_code in {400, 429}
    assert answer.json()["code"] == "sms_code_locked"
    assert "Retry-After" in answer

    # The owner asks for a fresh code a minute later and signs in with it.
    with clock.travel(dt.timedelta(seconds=61)):
        assert ask_code(phone, ip=OWNER).status_code == 200
        signed_in = sign_in(phone, sms_outbox.last_code(phone), ip=OWNER)
    assert signed_in.status_code == 200
    assert signed_in.json()["token"]


def test_wrong_codes_count_against_the_address_that_sends_them(settings, sms_outbox) -> None:
    settings.LIMITS = {**settings.LIMITS, "login_ip": "6/10m"}
    victims = [make_phone() for _ in range(3)]
    for phone in victims:
        ask_code(phone, ip=OWNER)
    statuses = [sign_in(phone, "000000", ip=ATTACKER).status_code for phone in victims * 3]
    assert statuses[:6] == [400] * 6
    assert set(statuses[6:]) == {429}
    # The owners are untouched: their own addresses, their own codes.
    for phone in victims:
        assert sign_in(phone, sms_outbox.last_code(phone), ip=OWNER).status_code == 200


class TestCaptcha:
    @pytest.fixture(autouse=True)
    def switched_on(self, settings) -> None:
        settings.CAPTCHA_ENABLED = True
        settings.LIMITS = {**settings.LIMITS, "captcha_ip": "2/h"}

    def _challenge(self, phone: str) -> dict:
        answer = ask_code(phone, ip=ATTACKER)
        assert answer.status_code == 400
        body = answer.json()
        assert body["code"] == "captcha_required"
        assert body["message"] == "请输入图形验证码"
        return body

    def test_an_address_past_the_threshold_must_solve_an_image(self, sms_outbox) -> None:
        assert ask_code(make_phone(), ip=ATTACKER).status_code == 200
        assert ask_code(make_phone(), ip=ATTACKER).status_code == 200
        phone = make_phone()
        body = self._challenge(phone)
        image = Client().get(body["captcha_image"])
        assert image.status_code == 200 and image["Content-Type"] == "image/png"

        solution = CaptchaStore.objects.get(hashkey=body["captcha_key"]).response
        solved = ask_code(
            phone, ip=ATTACKER, captcha_key=body["captcha_key"], captcha_answer=solution.upper()
        )
        assert solved.status_code == 200
        assert sms_outbox.last_code(phone)
        # A challenge answers once.
        again = ask_code(
            make_phone(), ip=ATTACKER, captcha_key=body["captcha_key"], captcha_answer=solution
        )
        assert again.json()["code"] == "captcha_required"

    def test_a_wrong_answer_gets_a_new_image_and_no_code(self, sms_outbox) -> None:
        ask_code(make_phone(), ip=ATTACKER)
        ask_code(make_phone(), ip=ATTACKER)
        phone = make_phone()
        body = self._challenge(phone)
        wrong = ask_code(phone, ip=ATTACKER, captcha_key=body["captcha_key"], captcha_answer="zzzz")
        assert wrong.status_code == 400
        assert wrong.json()["message"] == "图形验证码不正确，请重新输入"
        assert wrong.json()["captcha_key"] != body["captcha_key"]
        assert all(to != phone for to, _ in sms_outbox.sent)

    def test_other_addresses_are_not_asked(self, sms_outbox) -> None:
        for _ in range(3):
            ask_code(make_phone(), ip=ATTACKER)
        assert ask_code(make_phone(), ip=OWNER).status_code == 200

    def test_switched_off_nobody_is_asked(self, settings, sms_outbox) -> None:
        settings.CAPTCHA_ENABLED = False
        assert [ask_code(make_phone(), ip=ATTACKER).status_code for _ in range(4)] == [200] * 4
