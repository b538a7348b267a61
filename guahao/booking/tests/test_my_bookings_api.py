"""What a signed-in patient sees of their own bookings: live holds with their countdown, the
refund of a cancelled registration, and the doctors they have booked before (复诊)."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.booking import selectors, services
from guahao.booking.models import Registration
from guahao.booking.states import RegistrationStatus
from guahao.catalog.models import Notice, NoticeAck
from guahao.testing import (
    api_client,
    make_account,
    make_department,
    make_doctor,
    make_hospital,
    make_patient,
    make_session,
    run_worker,
)

from .conftest import loosen_caps, ready_to_book, registered

# --- GET /holds -----------------------------------------------------------------------------------


def test_my_live_holds_with_their_countdown(world, booker):
    account, patient = booker
    loosen_caps(world.hospital)
    me = api_client(account)
    slots = list(world.session.slots.order_by("seq"))
    first = services.hold_slot(account=account, slot_id=slots[0].id)
    with clock.travel(dt.timedelta(minutes=2)):
        second = services.hold_slot(account=account, slot_id=slots[1].id)
        services.confirm_hold(account=account, hold_id=second.id, patient_id=patient.id, channel="alipay", insurance=False)
        services.pay_hold(account=account, hold_id=second.id)
        released = services.hold_slot(account=account, slot_id=slots[2].id)
        services.release_hold(account=account, hold_id=released.id)
        services.hold_slot(account=make_account(), slot_id=slots[3].id)  # someone else's

        response = me.get("/api/v1/holds")
        assert response.status_code == 200
        holds = response.json()
        assert [(h["id"], h["state"], h["state_label"]) for h in holds] == [
            (first.id, "held", "锁号中"),  # expires first
            (second.id, "paying", "支付中"),
        ]
        assert 470 <= holds[0]["remaining_seconds"] <= 480
        assert 590 <= holds[1]["remaining_seconds"] <= 600
        assert holds[1]["patient"]["name"] == "张*丰"
        assert holds[1]["channel"] == "alipay"

    # The first lock runs out: it leaves the list, whether or not a sweeper has written EXPIRED.
    with clock.travel(dt.timedelta(minutes=10, seconds=1)):
        assert [h["id"] for h in me.get("/api/v1/holds").json()] == [second.id]
        assert [h.id for h in selectors.live_holds_of(account=account)] == [second.id]


def test_listing_holds_needs_sign_in(db):
    response = api_client().get("/api/v1/holds")
    assert response.status_code == 401
    assert response.json()["message"].startswith("请先登录")


# --- the refund of a registration ------------------------------------------------------------------


def test_a_registration_shows_its_refund(world, booker):
    account, patient = booker
    me = api_client(account)
    reg = registered(account, patient, world.session)
    shown = me.get(f"/api/v1/registrations/{reg.id}").json()
    assert shown["refund"] is None

    cancelled = me.post(f"/api/v1/registrations/{reg.id}/cancel").json()
    assert cancelled["status"] == "refunding"
    refund = cancelled["refund"]
    assert (refund["amount_fen"], refund["state"], refund["state_label"]) == (2500, "processing", "退款中")
    assert refund["reason"] == "患者取消"
    assert refund["requested_at"].endswith("+08:00")
    assert refund["finished_at"] is None

    run_worker()
    [listed] = me.get("/api/v1/registrations").json()
    assert listed["status"] == "cancelled"
    refund = listed["refund"]
    assert (refund["amount_fen"], refund["state"], refund["state_label"]) == (2500, "succeeded", "已退款")
    assert refund["finished_at"] >= refund["requested_at"]
    assert me.get(f"/api/v1/registrations/{reg.id}").json()["refund"] == refund


# --- doctors seen before (复诊) ---------------------------------------------------------------------


@pytest.fixture
def three_doctors(world):
    """李建国 (world's doctor), 王丽华 in the same department, 张卫东 in another hospital; a session
    of each tomorrow, 王丽华's the day after (one patient books one department once a day)."""
    wang = make_doctor(world.department, name="王丽华")
    other_hospital = make_hospital(name="另一家医院")
    zhang = make_doctor(make_department(other_hospital, name="呼吸内科"), name="张卫东")
    return {
        "李建国": world.session,
        "王丽华": make_session(world.department, doctor=wang, day=clock.today() + dt.timedelta(days=2)),
        "张卫东": make_session(zhang.department, doctor=zhang),
    }


def test_recent_doctors_most_recent_first_once_each_not_cancelled(world, three_doctors):
    account = make_account()
    patient = ready_to_book(account, world.hospital)
    for notice in Notice.objects.filter(hospital=three_doctors["张卫东"].hospital):
        NoticeAck.objects.create(notice=notice, account=account, acked_at=clock.now())
    registered(account, patient, three_doctors["李建国"], seq=1)
    with clock.travel(dt.timedelta(minutes=1)):
        registered(account, patient, three_doctors["张卫东"])
    with clock.travel(dt.timedelta(minutes=2)):
        wang = registered(account, patient, three_doctors["王丽华"])
    with clock.travel(dt.timedelta(minutes=3)):
        # A second registration with 李建国, for another family member: he is listed once, as latest.
        family = make_patient(account, name="李娜", relation="child")
        registered(account, family, three_doctors["李建国"], seq=2)
    services.cancel_registration(account=account, registration_id=wang.id)  # cancelled: not a doctor seen
    run_worker()
    assert Registration.objects.get(id=wang.id).status == RegistrationStatus.CANCELLED

    me = api_client(account)
    doctors = me.get("/api/v1/doctors/recent").json()
    assert [d["name"] for d in doctors] == ["李建国", "张卫东"]
    assert doctors[0]["department"] == {"id": world.department.id, "name": "心血管内科"}
    assert doctors[0]["title_label"] == "主任医师"
    assert doctors[0]["last_booked_at"].endswith("+08:00")
    assert [d["name"] for d in me.get("/api/v1/doctors/recent", hospital_id=world.hospital.id).json()] == ["李建国"]

    # The selector the patient pages call: Doctor rows with their department and last booking.
    [li] = selectors.recent_doctors(account, hospital=world.hospital, limit=10)
    assert (li.name, li.department.name) == ("李建国", "心血管内科")
    assert li.last_booked_at > Registration.objects.filter(account=account).order_by("booked_at").first().booked_at
    assert selectors.recent_doctors(make_account()) == []


def test_a_doctor_no_longer_working_is_not_offered_again(world, booker):
    account, patient = booker
    registered(account, patient, world.session)
    assert [d.name for d in selectors.recent_doctors(account)] == ["李建国"]
    world.doctor.is_active = False
    world.doctor.save()
    assert selectors.recent_doctors(account) == []


def test_recent_doctors_needs_sign_in(db):
    assert api_client().get("/api/v1/doctors/recent").status_code == 401


# --- the published schema -------------------------------------------------------------------------


def test_the_published_schema_of_a_holds_session_is_the_one_it_answers_with(world, booker):
    # The booking and the schedule answers both had a "SessionOut"; the schema published one of
    # them for both, so a client generated from it expected a hold's session without its hospital.
    account, _ = booker
    hold = services.hold_slot(account=account, slot_id=world.session.slots.get(seq=1).id)
    me = api_client(account)
    published = me.get("/api/v1/openapi.json").json()
    schemas = published["components"]["schemas"]
    answer = me.get(f"/api/v1/holds/{hold.id}").json()
    for name in ("HoldOut", "RegistrationOut"):
        session = schemas[schemas[name]["properties"]["session"]["$ref"].rsplit("/", 1)[-1]]
        assert set(session["required"]) == set(answer["session"])
    slots = published["paths"]["/api/v1/sessions/{session_id}/slots"]["get"]["responses"]["200"]
    slots_schema = schemas[slots["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    schedule_session = schemas[slots_schema["properties"]["session"]["$ref"].rsplit("/", 1)[-1]]
    assert "remaining" in schedule_session["required"]
