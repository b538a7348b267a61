"""Patient A can never see or touch patient B's data: another account's hold, registration or
patient answers exactly like a missing one."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Hold
from guahao.testing import api_client, make_account, pay_on_cashier, run_worker

from .conftest import ready_to_book


@pytest.fixture
def strangers_booking(world, booker):
    account, patient = booker
    hold = services.hold_slot(account=account, slot_id=world.session.slots.first().id)
    services.confirm_hold(
        account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False
    )
    _, params = services.pay_hold(account=account, hold_id=hold.id)
    assert pay_on_cashier(params.pay_url)[0] == 303
    run_worker()
    hold.refresh_from_db()
    return hold, hold.registration, patient


def assert_same_answer(me, path: str, missing_path: str, method: str = "get"):
    call = getattr(me, method)
    theirs, missing = call(path), call(missing_path)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()


def test_another_accounts_hold_answers_like_a_missing_one(world, strangers_booking):
    hold, _, _ = strangers_booking
    me = api_client(make_account())
    assert_same_answer(me, f"/api/v1/holds/{hold.id}", "/api/v1/holds/999999")
    assert_same_answer(me, f"/api/v1/holds/{hold.id}/pay", "/api/v1/holds/999999/pay", "post")
    assert_same_answer(me, f"/api/v1/holds/{hold.id}", "/api/v1/holds/999999", "delete")


def test_another_accounts_registration_answers_like_a_missing_one(world, strangers_booking):
    _, registration, _ = strangers_booking
    me = api_client(make_account())
    assert_same_answer(
        me, f"/api/v1/registrations/{registration.id}", "/api/v1/registrations/999999"
    )
    assert_same_answer(
        me,
        f"/api/v1/registrations/{registration.id}/cancel",
        "/api/v1/registrations/999999/cancel",
        "post",
    )
    assert me.get("/api/v1/registrations").json() == []
    registration.refresh_from_db()
    assert registration.status == "booked"


def test_another_accounts_patient_answers_like_a_missing_one(world, strangers_booking):
    _, _, patient = strangers_booking
    me = api_client(make_account())
    assert_same_answer(me, f"/api/v1/patients/{patient.id}", "/api/v1/patients/999999", "delete")
    assert me.get("/api/v1/patients").json() == []


def test_confirming_with_another_accounts_patient_answers_like_a_missing_one(
    world, strangers_booking
):
    _, _, patient = strangers_booking
    account = make_account()
    ready_to_book(account, world.hospital, name="李四")
    me = api_client(account)
    hold = me.post("/api/v1/holds", {"slot_id": world.session.slots.order_by("seq")[1].id}).json()
    theirs = me.post(
        f"/api/v1/holds/{hold['id']}/confirm", {"patient_id": patient.id, "channel": "wechat"}
    )
    missing = me.post(
        f"/api/v1/holds/{hold['id']}/confirm", {"patient_id": 999999, "channel": "wechat"}
    )
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()


def test_without_a_token_nothing_is_shown(world, strangers_booking):
    hold, registration, _ = strangers_booking
    anonymous = api_client()
    for path in (
        f"/api/v1/holds/{hold.id}",
        f"/api/v1/registrations/{registration.id}",
        "/api/v1/patients",
    ):
        response = anonymous.get(path)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"


def test_hold_countdown_and_expiry_are_visible_to_the_owner(world, booker):
    account, _ = booker
    me = api_client(account)
    hold = me.post("/api/v1/holds", {"slot_id": world.session.slots.first().id}).json()
    with clock.travel(dt.timedelta(minutes=4)):
        assert 355 <= me.get(f"/api/v1/holds/{hold['id']}").json()["remaining_seconds"] <= 360
    with clock.travel(dt.timedelta(minutes=10, seconds=1)):
        late = me.get(f"/api/v1/holds/{hold['id']}").json()
        assert late["state"] == "expired" and late["remaining_seconds"] == 0
    assert Hold.objects.get(id=hold["id"]).state == "held"  # nothing had to write it


def test_bad_hold_requests_get_a_chinese_message_naming_the_field(world, booker):
    me = api_client(booker[0])
    response = me.post("/api/v1/holds", {})
    assert response.status_code == 400
    assert "slot_id" in response.json()["message"]
    response = me.post("/api/v1/holds", {"slot_id": "abc"})
    assert response.status_code == 422
    assert "slot_id" in response.json()["message"]
    response = me.post("/api/v1/holds", {"slot_id": 987654})
    assert response.status_code == 404
    assert response.json() == {"code": "slot_not_found", "message": "号源不存在"}
