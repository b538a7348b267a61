"""The console's schedule work: a week from the templates, 加号, 停诊 with a reason and its undo, the
offline share, release rules that the next hold obeys, and one hospital's staff never reaching
another hospital's sessions."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from guahao import clock
from guahao.booking import services as booking
from guahao.booking.messages import suspension_phrase
from guahao.booking.models import Registration
from guahao.booking.tests.conftest import ready_to_book, registered
from guahao.console import roles
from guahao.console.models import AuditEntry
from guahao.console.testing import console_client, make_staff
from guahao.payments.models import Refund
from guahao.scheduling import selectors, services
from guahao.scheduling.models import RegistrationType, ReleaseRule, Session, Slot, WeeklyTemplate
from guahao.testing import (
    api_client,
    make_account,
    make_department,
    make_doctor,
    make_hospital,
    make_session,
    run_worker,
)

from .conftest import day

SESSIONS = "/admin/scheduling/session/"


def _next_monday() -> dt.date:
    today = clock.today()
    return today + dt.timedelta(days=7 - today.weekday())


def _slots_api(session: Session) -> dict:
    response = api_client().get(f"/api/v1/sessions/{session.id}/slots")
    assert response.status_code == 200, response.content
    return response.json()


def _audits(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("id"))


@pytest.fixture(autouse=True)
def books_in_order(request):
    """`guahao ledger-check` finds nothing after each scenario (offline numbers, 加号 and undone
    suspensions included)."""
    if not {"world", "db"} & set(request.fixturenames):
        yield
        return
    request.getfixturevalue("_django_db_helper")  # set up before this check, torn down after it
    yield
    from guahao.ledger import find_violations

    assert find_violations() == []


@pytest.fixture
def sysadmin(world):
    return make_staff(role=roles.SYSTEM_ADMIN, hospitals=[world.hospital])


@pytest.fixture
def operations(world):
    return make_staff(role=roles.OPERATIONS, hospitals=[world.hospital])


# --- a week from the templates ------------------------------------------------------------------


def _template(world, **fields) -> WeeklyTemplate:
    values = {
        "hospital": world.hospital,
        "department": world.cardiology,
        "doctor": world.doctor,
        "registration_type": RegistrationType.objects.get(hospital=world.hospital),
        "weekday": 0,
        "period": Session.Period.MORNING,
        "start": dt.time(8, 0),
        "end": dt.time(11, 0),
        "capacity": 12,
        **fields,
    }
    return WeeklyTemplate.objects.create(**values)


def test_a_week_is_made_from_the_active_template_lines_once(world, sysadmin):
    _template(world, fee_fen=5000)
    _template(world, doctor=None, weekday=2, period=Session.Period.AFTERNOON, start=dt.time(14, 0), end=dt.time(17, 0))
    _template(world, weekday=4, is_active=False)
    monday = _next_monday()
    client = console_client(sysadmin)

    page = client.post(f"{SESSIONS}generate-week/", {"hospital": world.hospital.pk, "week_start": monday.isoformat()})

    assert page.status_code == 200
    assert "新建 2 个排班" in page.content.decode()
    made = Session.objects.filter(hospital=world.hospital).order_by("date")
    assert [(s.date, s.period, s.doctor_id, s.fee_fen) for s in made] == [
        (monday, "morning", world.doctor.id, 5000),
        (monday + dt.timedelta(days=2), "afternoon", None, 1000),  # the registration type's fee
    ]
    assert made[0].slots.count() == 12
    assert "生成" in _audits(AuditEntry.Action.ADD)[-1].detail

    again = client.post(f"{SESSIONS}generate-week/", {"hospital": world.hospital.pk, "week_start": monday.isoformat()})
    assert "新建 0 个排班" in again.content.decode() and "已有排班" in again.content.decode()
    assert Session.objects.filter(hospital=world.hospital).count() == 2


def test_a_week_must_start_on_a_monday(world, sysadmin):
    page = console_client(sysadmin).post(
        f"{SESSIONS}generate-week/",
        {"hospital": world.hospital.pk, "week_start": (_next_monday() + dt.timedelta(days=1)).isoformat()},
    )
    assert "请选择星期一" in page.content.decode()
    assert not Session.objects.exists()


def test_a_template_fee_is_typed_in_yuan(world, sysadmin):
    answer = console_client(sysadmin).post(
        "/admin/scheduling/weeklytemplate/add/",
        {
            "hospital": world.hospital.pk,
            "department": world.cardiology.pk,
            "doctor": world.doctor.pk,
            "registration_type": RegistrationType.objects.get(hospital=world.hospital).pk,
            "weekday": 1,
            "period": "morning",
            "start": "08:00",
            "end": "11:30",
            "capacity": 20,
            "window_minutes": 30,
            "fee_yuan": "12.50",
            "location": "",
            "is_active": "on",
        },
    )
    assert answer.status_code == 302, answer.content.decode()
    assert WeeklyTemplate.objects.get().fee_fen == 1250
    listing = console_client(sysadmin).get("/admin/scheduling/weeklytemplate/").content.decode()
    assert "12.50 元" in listing


# --- 加号 ---------------------------------------------------------------------------------------


def test_added_numbers_are_bookable_at_once_and_traced(world, operations):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1), slots=4)
    before = _slots_api(session)
    assert before["session"]["remaining"] == 4

    answer = console_client(operations).post(f"{SESSIONS}{session.pk}/add-slots/", {"count": 2})

    assert answer.status_code == 302
    after = _slots_api(session)
    assert after["session"]["remaining"] == 6
    assert after["session"]["capacity"] == 6
    assert sum(w["total"] for w in after["windows"]) == 6
    added = list(Slot.objects.filter(session=session, seq__gt=4).order_by("seq"))
    assert [s.seq for s in added] == [5, 6]
    assert {s.added_by for s in added} == {operations.username}
    assert all(s.added_at is not None for s in added)
    last = Slot.objects.get(session=session, seq=4)
    assert all((s.window_start, s.window_end) == (last.window_start, last.window_end) for s in added)
    (audit,) = _audits(AuditEntry.Action.ADD_SLOT)
    assert audit.staff_username == operations.username and audit.object_id == str(session.pk)
    # A patient can hold an added number through the API right away.
    hold = api_client(make_account()).post("/api/v1/holds", {"slot_id": added[0].id})
    assert hold.status_code == 201, hold.content


def test_no_numbers_are_added_to_a_suspended_session(world, operations):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1), status=Session.Status.SUSPENDED)
    page = console_client(operations).post(f"{SESSIONS}{session.pk}/add-slots/", {"count": 1})
    assert "已停诊，不能加号" in page.content.decode()
    assert session.slots.count() == 4


# --- 停诊 with a reason, and its undo ------------------------------------------------------------


def test_suspension_phrase_reads_once_whatever_the_reason():
    assert suspension_phrase("医生外出会诊") == "因医生外出会诊停诊，"
    assert suspension_phrase("医院安排停诊") == "因医院安排停诊，"
    assert suspension_phrase("因专家临时手术。") == "因专家临时手术停诊，"


def _booked(world, session: Session, *, seq: int = 1) -> Registration:
    account = make_account()
    return registered(account, ready_to_book(account, world.hospital), session, seq=seq)


def test_suspending_with_a_reason_cancels_refunds_and_tells_the_patient_once(world, operations, caplog):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1))
    registration = _booked(world, session)
    client = console_client(operations)

    asked = client.get(f"{SESSIONS}{session.pk}/suspend/")
    assert asked.status_code == 200 and "停诊原因" in asked.content.decode()
    assert client.post(f"{SESSIONS}{session.pk}/suspend/", {"reason": ""}).status_code == 200  # required
    session.refresh_from_db()
    assert session.status == Session.Status.OPEN

    with caplog.at_level(logging.INFO, logger="guahao.messages"):
        answer = client.post(f"{SESSIONS}{session.pk}/suspend/", {"reason": "医生外出会诊"})
        run_worker()

    assert answer.status_code == 302
    session.refresh_from_db()
    assert (session.status, session.suspend_reason) == (Session.Status.SUSPENDED, "医生外出会诊")
    registration.refresh_from_db()
    assert registration.status == "cancelled"
    assert Refund.objects.get(payment=registration.hold.payment).state == Refund.State.SUCCEEDED
    texts = [r.getMessage() + " " + str(getattr(r, "text", "")) for r in caplog.records if r.name == "guahao.messages"]
    assert any("因医生外出会诊停诊，" in t for t in texts), texts
    assert not any("停诊停诊" in t for t in texts)
    (audit,) = _audits(AuditEntry.Action.SUSPEND)
    assert audit.detail == "停诊原因：医生外出会诊" and audit.after["status"] == "suspended"


def test_a_suspension_with_nothing_settled_can_be_undone(world, operations):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1))
    client = console_client(operations)
    client.post(f"{SESSIONS}{session.pk}/suspend/", {"reason": "误操作"})
    run_worker()  # nothing to settle: the suspension stays undoable

    answer = client.post(f"{SESSIONS}{session.pk}/resume/")

    assert answer.status_code == 302
    session.refresh_from_db()
    assert (session.status, session.suspend_reason, session.suspended_at) == (Session.Status.OPEN, "", None)
    assert len(_audits(AuditEntry.Action.RESUME)) == 1
    assert api_client(make_account()).post("/api/v1/holds", {"slot_id": session.slots.first().id}).status_code == 201


def test_undoing_before_the_job_ran_keeps_the_registrations(world, operations):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1))
    registration = _booked(world, session)
    client = console_client(operations)
    client.post(f"{SESSIONS}{session.pk}/suspend/", {"reason": "误操作"})

    client.post(f"{SESSIONS}{session.pk}/resume/")
    run_worker()  # the 停诊 job finds the session open again and settles nothing

    session.refresh_from_db()
    registration.refresh_from_db()
    assert session.status == Session.Status.OPEN
    assert registration.status == "booked"
    assert not Refund.objects.exists()


def test_a_suspension_that_cancelled_registrations_cannot_be_undone(world, operations):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1))
    registration = _booked(world, session)
    client = console_client(operations)
    client.post(f"{SESSIONS}{session.pk}/suspend/", {"reason": "医生外出会诊"})
    run_worker()

    answer = client.post(f"{SESSIONS}{session.pk}/resume/", follow=True)

    assert "不能恢复出诊" in answer.content.decode()
    session.refresh_from_db()
    assert session.status == Session.Status.SUSPENDED
    registration.refresh_from_db()
    assert registration.status == "cancelled"
    assert not _audits(AuditEntry.Action.RESUME)


def test_a_hold_ended_by_the_suspension_also_blocks_the_undo(world):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1))
    booking.hold_slot(account=make_account(), slot_id=session.slots.first().id)
    services.suspend_session(session=session, reason="医生外出会诊")
    run_worker()

    from guahao.booking.services.suspend import resume_session
    from guahao.errors import Conflict

    with pytest.raises(Conflict) as refused:
        resume_session(session_id=session.id)
    assert refused.value.code == "suspension_settled"


# --- the offline share --------------------------------------------------------------------------


def test_the_offline_share_is_spread_through_the_session_and_never_offered(world):
    ReleaseRule.objects.filter(hospital=world.hospital, department=None).update(offline_percent=25)
    session = services.create_session(
        department=world.cardiology,
        doctor=world.doctor,
        registration_type=RegistrationType.objects.get(hospital=world.hospital),
        date=day(1),
        period=Session.Period.MORNING,
        start=dt.time(8, 0),
        end=dt.time(12, 0),
        capacity=8,
        window_minutes=30,
    )

    offline = list(session.slots.filter(state=Slot.State.OFFLINE).values_list("seq", flat=True).order_by("seq"))
    assert offline == [3, 7]  # 25% of 8, one in the middle of each half
    assert session.capacity == 6
    counted = selectors.with_slot_counts(Session.objects.filter(id=session.id), now=clock.now()).get()
    assert (counted.free, counted.total, counted.offline) == (6, 6, 2)
    shown = _slots_api(session)
    assert shown["session"]["remaining"] == 6
    assert sum(w["total"] for w in shown["windows"]) == 6

    refused = api_client(make_account()).post("/api/v1/holds", {"slot_id": session.slots.get(seq=3).id})
    assert refused.status_code == 409
    assert refused.json()["code"] == "slot_taken"
    assert session.slots.get(seq=3).state == Slot.State.OFFLINE


def test_offline_share_rounds_down_and_is_capped(world, sysadmin):
    assert services.offline_positions(capacity=10, percent=30) == {1, 5, 8}
    assert services.offline_positions(capacity=3, percent=30) == set()  # 0.9 rounds down to none
    assert len(services.offline_positions(capacity=10, percent=90)) == 9
    rule = ReleaseRule.objects.get(hospital=world.hospital, department=None)
    page = console_client(sysadmin).post(f"/admin/scheduling/releaserule/{rule.pk}/change/", _rule_form(rule, offline_percent=95))
    assert page.status_code == 200  # the form shows the error
    rule.refresh_from_db()
    assert rule.offline_percent == 0


# --- release rules --------------------------------------------------------------------------------


def _rule_form(rule: ReleaseRule, **changes) -> dict:
    data = {
        "hospital": rule.hospital_id,
        "department": rule.department_id or "",
        "release_time": rule.release_time.strftime("%H:%M:%S"),
        "window_days": rule.window_days,
        "book_before_minutes": rule.book_before_minutes,
        "offline_percent": rule.offline_percent,
        "lock_minutes": rule.lock_minutes,
        "cancel_deadline_hours": rule.cancel_deadline_hours,
        "register_cutoff_minutes": rule.register_cutoff_minutes,
        "max_live_holds_per_account": rule.max_live_holds_per_account,
        "max_holds_per_day_per_account": rule.max_holds_per_day_per_account,
    }
    return {**data, **changes}


def test_a_changed_lock_time_is_used_by_the_next_hold(world, sysadmin):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1))
    rule = ReleaseRule.objects.get(hospital=world.hospital, department=None)
    page = console_client(sysadmin).get(f"/admin/scheduling/releaserule/{rule.pk}/change/").content.decode()
    assert "锁号时长（分钟）" in page and "线下预留比例" in page

    answer = console_client(sysadmin).post(
        f"/admin/scheduling/releaserule/{rule.pk}/change/", _rule_form(rule, lock_minutes=25)
    )

    assert answer.status_code == 302
    before = clock.now()
    hold = booking.hold_slot(account=make_account(), slot_id=session.slots.first().id)
    assert before + dt.timedelta(minutes=25) <= hold.expires_at <= clock.now() + dt.timedelta(minutes=25)
    audit = _audits(AuditEntry.Action.CHANGE)[-1]
    assert (audit.before, audit.after) == ({"lock_minutes": 10}, {"lock_minutes": 25})


# --- the sessions list and another hospital -------------------------------------------------------


def test_the_sessions_list_shows_yuan_counts_and_only_own_hospital(world, sysadmin):
    make_session(world.cardiology, doctor=world.doctor, day=day(0), fee_fen=2550)
    other = make_hospital(name="别家医院")
    other_department = make_department(other, name="别家眼科")
    make_doctor(other_department, name="别家医生")
    theirs = make_session(other_department, day=day(0))
    client = console_client(sysadmin)

    page = client.get(SESSIONS, {"visit_day": "today"}).content.decode()

    assert "25.50 元" in page and "4/4" in page
    assert "别家眼科" not in page and "别家医生" not in page
    assert "以 department" not in page
    for url in (f"{SESSIONS}{theirs.pk}/suspend/", f"{SESSIONS}{theirs.pk}/add-slots/", f"{SESSIONS}{theirs.pk}/resume/"):
        assert client.get(url).status_code == 404, url
        assert client.post(url, {"reason": "x", "count": 1}).status_code == 404, url
    theirs.refresh_from_db()
    assert theirs.status == Session.Status.OPEN and theirs.slots.count() == 4


def test_operations_cannot_make_a_week_and_auditors_cannot_suspend(world, operations):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1))
    assert console_client(operations).get(f"{SESSIONS}generate-week/").status_code == 403
    auditor = make_staff(role=roles.AUDITOR, hospitals=[world.hospital])
    assert console_client(auditor).post(f"{SESSIONS}{session.pk}/suspend/", {"reason": "x"}).status_code == 403
    session.refresh_from_db()
    assert session.status == Session.Status.OPEN


def test_console_schedule_pages_have_no_inline_script_or_style(world, sysadmin):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1))
    client = console_client(sysadmin)
    for url in (
        f"{SESSIONS}generate-week/",
        f"{SESSIONS}{session.pk}/suspend/",
        f"{SESSIONS}{session.pk}/add-slots/",
        f"{SESSIONS}{session.pk}/change/",
        "/admin/scheduling/weeklytemplate/add/",
    ):
        page = client.get(url)
        assert page.status_code == 200, url
        html = page.content.decode()
        assert "style=" not in html and "<script>" not in html, url


def test_the_ledger_check_reports_an_offline_number_claimed_online(world):
    from guahao.ledger import find_violations

    session = make_session(world.cardiology, doctor=world.doctor, day=day(1))
    slot = session.slots.first()
    booking.hold_slot(account=make_account(), slot_id=slot.id)
    held = Slot.objects.filter(id=slot.id).values("state", "held_until").get()
    Slot.objects.filter(id=slot.id).update(state=Slot.State.OFFLINE)  # a defect, made on purpose

    found = [v for v in find_violations() if v.kind == "slot_state_mismatch"]

    assert found and "offline" in found[0].message
    Slot.objects.filter(id=slot.id).update(**held)  # the books in order again for the fixture's check


@pytest.mark.django_db
def test_a_registration_types_fee_is_typed_in_yuan():
    from guahao.console.testing import superuser_client
    from guahao.scheduling.models import RegistrationType

    hospital = make_hospital()
    client = superuser_client()
    answer = client.post(
        "/admin/scheduling/registrationtype/add/",
        {"hospital": hospital.pk, "code": "ZJ", "name": "专家号", "default_fee_yuan": "35.50"},
    )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    fee = RegistrationType.objects.get(hospital=hospital, code="ZJ").default_fee_fen
    assert fee == 3550
    page = client.get(f"/admin/scheduling/registrationtype/{RegistrationType.objects.get(code='ZJ').pk}/change/")
    assert "35.50" in page.content.decode() and "（分）" not in page.content.decode()
