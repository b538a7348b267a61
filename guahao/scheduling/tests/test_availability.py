from __future__ import annotations

import datetime as dt

from django.db import connection
from django.test.utils import CaptureQueriesContext

from guahao import clock
from guahao.catalog.selectors import get_department
from guahao.scheduling import selectors
from guahao.scheduling.models import Session, Slot
from guahao.testing import make_doctor, make_session

from .conftest import day


def _by_id(calendar: list[selectors.DayAvailability]) -> dict[int, selectors.SessionAvailability]:
    return {s.id: s for d in calendar for s in d.sessions}


def test_the_calendar_shows_every_state_with_remaining_counts(world, ten_am):
    started = make_session(world.cardiology, doctor=world.doctor, day=day(0), start=dt.time(8, 0))
    available = make_session(world.cardiology, doctor=world.doctor, day=day(1), slots=4)
    Slot.objects.filter(session=available, seq=1).update(state=Slot.State.BOOKED)
    full = make_session(world.cardiology, doctor=world.doctor, day=day(2), slots=3)
    full.slots.update(state=Slot.State.BOOKED)
    suspended = make_session(world.cardiology, day=day(3), status=Session.Status.SUSPENDED)
    later = make_session(world.cardiology, day=day(9))

    calendar = selectors.availability(department=world.cardiology, days=14, now=clock.now())
    shown = _by_id(calendar)

    assert [(shown[s.id].status, shown[s.id].remaining) for s in (started, available, full, suspended, later)] == [
        ("closed", 0),
        ("available", 3),
        ("full", 0),
        ("suspended", 0),
        ("not_released", 4),
    ]
    assert [shown[s.id].status_label for s in (started, available, full, suspended, later)] == [
        "已结束",
        "有号",
        "约满",
        "停诊",
        "未放号",
    ]
    assert shown[later.id].release_at == clock.at_local(day(2), dt.time(7, 0))
    assert shown[available.id].release_at is None
    assert [d.has_slots for d in calendar[:4]] == [False, True, False, False]
    assert [d.date for d in calendar] == [day(i) for i in range(14)]
    assert calendar[1].weekday == selectors.WEEKDAYS[day(1).weekday()]


def test_an_expired_hold_counts_as_free_and_a_live_one_does_not(world, ten_am):
    session = make_session(world.cardiology, day=day(1), slots=3)
    now = clock.now()
    Slot.objects.filter(session=session, seq=1).update(state=Slot.State.HELD, held_until=now - dt.timedelta(minutes=1))
    Slot.objects.filter(session=session, seq=2).update(state=Slot.State.HELD, held_until=now + dt.timedelta(minutes=5))

    assert Slot.objects.filter(selectors.free_slot_q(now), session=session).count() == 2
    shown = _by_id(selectors.availability(department=world.cardiology, now=now))[session.id]
    assert (shown.status, shown.remaining) == ("available", 2)
    # The live hold lapses five minutes later: its number is free again without any sweeper.
    later = now + dt.timedelta(minutes=5)
    assert _by_id(selectors.availability(department=world.cardiology, now=later))[session.id].remaining == 3


def test_a_department_calendar_includes_sub_departments_but_not_inactive_doctors(world, ten_am):
    clinic = make_session(world.cardiology, day=day(1))
    from guahao.testing import make_department

    hypertension = make_department(world.hospital, name="高血压专病门诊", parent=world.cardiology)
    sub = make_session(hypertension, day=day(1), start=dt.time(13, 30))
    retired = make_doctor(world.cardiology, name="退休医生")
    retired_session = make_session(world.cardiology, doctor=retired, day=day(2))
    retired.is_active = False
    retired.save()

    level1 = _by_id(selectors.availability(department=world.internal, now=clock.now()))
    level2 = _by_id(selectors.availability(department=world.cardiology, now=clock.now()))
    level3 = _by_id(selectors.availability(department=hypertension, now=clock.now()))
    assert set(level1) == set(level2) == {clinic.id, sub.id}
    assert set(level3) == {sub.id}
    assert retired_session.id not in level2


def test_a_doctor_calendar_has_only_that_doctors_sessions(world, ten_am):
    mine = make_session(world.cardiology, doctor=world.doctor, day=day(1))
    make_session(world.cardiology, day=day(1))
    shown = _by_id(selectors.availability(doctor=world.doctor, now=clock.now()))
    assert set(shown) == {mine.id}
    assert shown[mine.id].doctor.title_label == "主任医师"


def test_days_are_capped_by_the_hospital_schedule_days(world, ten_am):
    world.hospital.schedule_days = 5
    world.hospital.save()
    department = get_department(world.cardiology.id)
    assert len(selectors.availability(department=department, days=14, now=clock.now())) == 5


def test_availability_costs_the_same_few_queries_for_one_session_or_many(world, ten_am):
    department = get_department(world.cardiology.id)
    make_session(world.cardiology, doctor=world.doctor, day=day(1))
    with CaptureQueriesContext(connection) as one:
        selectors.availability(department=department, days=14, now=clock.now())
    for offset in range(1, 13):
        make_session(world.cardiology, day=day(offset), start=dt.time(13, 30))
        make_session(world.cardiology, doctor=make_doctor(world.cardiology), day=day(offset))
    with CaptureQueriesContext(connection) as many:
        calendar = selectors.availability(department=department, days=14, now=clock.now())
    assert sum(len(d.sessions) for d in calendar) == 25
    assert len(many) == len(one) <= 4


def test_slots_of_groups_numbers_by_time_window(world, ten_am):
    session = make_session(world.cardiology, day=day(1), slots=6, per_window=2, window_minutes=15)
    Slot.objects.filter(session=session, seq__in=[1, 2, 3]).update(state=Slot.State.BOOKED)
    result = selectors.slots_of(session, now=clock.now())
    assert result.session.remaining == 3
    assert [(w.total, w.free) for w in result.windows] == [(2, 0), (2, 1), (2, 2)]
    assert [w.window_end - w.window_start for w in result.windows] == [dt.timedelta(minutes=15)] * 3
    assert result.windows[0].slot_id is None
    assert result.windows[1].slot_id == Slot.objects.get(session=session, seq=4).id
    assert result.windows[0].window_start == clock.at_local(day(1), dt.time(8, 0))


def test_slots_of_a_not_released_session_offers_nothing_to_hold(world, ten_am):
    session = make_session(world.cardiology, day=day(10), slots=2)
    result = selectors.slots_of(session, now=clock.now())
    assert result.session.status == "not_released"
    assert all(w.slot_id is None for w in result.windows)
    assert sum(w.free for w in result.windows) == 2
