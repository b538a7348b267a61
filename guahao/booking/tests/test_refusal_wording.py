"""A refused move on a hold or registration tells the patient what happened in their words
(该挂号已取消，无需重复操作), never the state machine's (不能变为「退费中」)."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.booking.models import Registration
from guahao.booking.states import HoldState, RegistrationStatus, hold_refusal, registration_refusal
from guahao.testing import api_client, run_worker

from .conftest import registered


def _refusal(response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["code"], body["message"]


def test_cancelling_twice_says_it_is_already_cancelled(world, booker):
    account, patient = booker
    me = api_client(account)
    reg = registered(account, patient, world.session)
    assert me.post(f"/api/v1/registrations/{reg.id}/cancel").status_code == 200
    assert _refusal(me.post(f"/api/v1/registrations/{reg.id}/cancel")) == (
        409, "registration_state_conflict", "该挂号已取消，正在退费，无需重复操作"
    )
    run_worker()
    assert _refusal(me.post(f"/api/v1/registrations/{reg.id}/cancel")) == (
        409, "registration_state_conflict", "该挂号已取消，无需重复操作"
    )


@pytest.mark.parametrize(
    "status,message",
    [
        (RegistrationStatus.VISITED, "该挂号已就诊，不能取消"),
        (RegistrationStatus.CHECKED_IN, "该挂号已取号，不能在线取消；如需退号请到医院挂号窗口办理"),
        (RegistrationStatus.NO_SHOW, "该挂号已过就诊时间（爽约），不能取消"),
    ],
)
def test_a_registration_past_booking_cannot_be_cancelled_and_says_why(world, booker, status, message):
    account, patient = booker
    reg = registered(account, patient, world.session)
    Registration.objects.filter(id=reg.id).update(status=status)  # as the HIS reports it
    response = api_client(account).post(f"/api/v1/registrations/{reg.id}/cancel")
    assert _refusal(response) == (409, "registration_state_conflict", message)
    assert "不能变为" not in response.json()["message"]


def test_acting_on_a_released_hold_says_it_was_cancelled(world, booker):
    account, patient = booker
    me = api_client(account)
    hold = me.post("/api/v1/holds", {"slot_id": world.session.slots.first().id}).json()
    assert me.delete(f"/api/v1/holds/{hold['id']}").status_code == 200
    expected = (409, "hold_state_conflict", "该锁号已取消，号源已释放；如需就诊请重新选择号源")
    assert _refusal(me.post(f"/api/v1/holds/{hold['id']}/confirm", {"patient_id": patient.id, "channel": "wechat"})) == expected
    assert _refusal(me.post(f"/api/v1/holds/{hold['id']}/pay")) == expected
    assert _refusal(me.delete(f"/api/v1/holds/{hold['id']}")) == expected


def test_acting_on_a_hold_that_became_a_registration_points_to_it(world, booker):
    account, patient = booker
    reg = registered(account, patient, world.session)
    response = api_client(account).post(f"/api/v1/holds/{reg.hold_id}/pay")
    assert _refusal(response) == (409, "hold_state_conflict", "该号源已挂号成功，请在“我的挂号”中查看")


def test_paying_an_expired_hold_says_the_lock_ran_out(world, booker):
    account, patient = booker
    me = api_client(account)
    hold = me.post("/api/v1/holds", {"slot_id": world.session.slots.first().id}).json()
    me.post(f"/api/v1/holds/{hold['id']}/confirm", {"patient_id": patient.id, "channel": "wechat"})
    with clock.travel(dt.timedelta(minutes=11)):
        assert _refusal(me.post(f"/api/v1/holds/{hold['id']}/pay")) == (
            409, "hold_expired", "锁号已超时，号源已释放，请重新选择号源"
        )


def test_every_state_has_patient_wording():
    for state in HoldState:
        assert "不能变为" not in hold_refusal(state).message
        assert "「" not in hold_refusal(state).message
    for status in RegistrationStatus:
        for target in RegistrationStatus:
            assert "不能变为" not in registration_refusal(status, target).message
