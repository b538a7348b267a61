from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.errors import Conflict, InvalidInput, NotFound
from guahao.notifications.models import OutboxEvent
from guahao.scheduling import selectors, services
from guahao.scheduling.models import RegistrationType, Session, Slot
from guahao.testing import make_session

from .conftest import day


def _create(world, **overrides) -> Session:
    fields = {
        "department": world.cardiology,
        "doctor": world.doctor,
        "registration_type": RegistrationType.objects.get(hospital=world.hospital),
        "date": day(1),
        "period": Session.Period.MORNING,
        "start": dt.time(8, 0),
        "end": dt.time(11, 30),
        "fee_fen": 5000,
        "capacity": 30,
        "window_minutes": 15,
    }
    return services.create_session(**{**fields, **overrides})


def test_create_session_cuts_the_session_into_short_windows(world):
    session = _create(world)
    slots = list(session.slots.order_by("seq"))
    assert [s.seq for s in slots] == list(range(1, 31))
    assert session.starts_at == clock.at_local(day(1), dt.time(8, 0))
    assert session.ends_at == clock.at_local(day(1), dt.time(11, 30))
    windows = sorted({(s.window_start, s.window_end) for s in slots})
    assert len(windows) == 14  # 3½ hours in 15-minute windows
    assert all(end - start == dt.timedelta(minutes=15) for start, end in windows)
    per_window = [sum(1 for s in slots if s.window_start == w[0]) for w in windows]
    assert sorted(per_window) == [2] * 12 + [3] * 2
    assert windows[-1][1] == session.ends_at


def test_a_window_over_thirty_minutes_is_refused(world):
    with pytest.raises(InvalidInput) as err:
        _create(world, window_minutes=31)
    assert err.value.code == "slot_window_too_long"
    assert not Session.objects.exists()
    assert _create(world, window_minutes=30).slots.count() == 30


def test_the_last_window_is_cut_at_the_session_end(world):
    session = _create(world, start=dt.time(13, 30), end=dt.time(14, 40), period=Session.Period.AFTERNOON, capacity=3, window_minutes=30)
    windows = [(s.window_start, s.window_end) for s in session.slots.order_by("seq")]
    assert windows[-1][1] - windows[-1][0] == dt.timedelta(minutes=10)


def test_a_doctor_has_one_session_per_date_and_period(world):
    _create(world)
    with pytest.raises(Conflict) as err:
        _create(world)
    assert err.value.code == "session_exists"
    _create(world, period=Session.Period.AFTERNOON, start=dt.time(13, 30), end=dt.time(17, 0))


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"capacity": 0}, "session_capacity_invalid"),
        ({"end": dt.time(8, 0)}, "session_time_invalid"),
        ({"period": "night"}, "session_period_invalid"),
        ({"window_minutes": 0}, "slot_window_too_long"),
    ],
)
def test_create_session_refuses_bad_input(world, overrides, code):
    with pytest.raises(InvalidInput) as err:
        _create(world, **overrides)
    assert err.value.code == code


def test_suspending_stops_booking_and_tells_booking_once(world, ten_am):
    session = make_session(world.cardiology, day=day(1))
    services.suspend_session(session=session, reason="医生外出参加学术会议")
    services.suspend_session(session=session, reason="再次停诊")
    session.refresh_from_db()
    assert (session.status, session.suspend_reason) == (Session.Status.SUSPENDED, "医生外出参加学术会议")
    assert OutboxEvent.objects.filter(topic="session.suspended", payload__session_id=session.id).count() == 1
    with pytest.raises(Conflict) as err:
        selectors.check_bookable(session, now=clock.now())
    assert err.value.code == "session_suspended"


def test_a_session_closes_when_its_last_window_is_within_the_booking_margin(world, ten_am):
    # 08:00–10:00: every window has started.
    session = make_session(world.cardiology, day=day(0), start=dt.time(8, 0))
    with pytest.raises(Conflict) as err:
        selectors.check_bookable(session, now=clock.now())
    assert err.value.code == "session_closed"
    assert selectors.check_bookable(make_session(world.cardiology, day=day(0), start=dt.time(13, 30)), now=clock.now())


def test_a_started_session_keeps_its_later_windows_bookable(world, ten_am):
    # 09:30–11:30 in four windows; bookings close 30 minutes (the default) before each window.
    session = make_session(world.cardiology, day=day(0), start=dt.time(9, 30))
    rule = selectors.check_bookable(session, now=clock.now())
    assert rule.book_before_minutes == 30
    windows = [clock.at_local(day(0), dt.time(h, m)) for h, m in ((9, 30), (10, 0), (10, 30), (11, 0))]
    messages = []
    for window in windows[:3]:
        with pytest.raises(Conflict) as err:
            selectors.check_window_open(window, rule=rule, now=clock.now())
        assert err.value.code == "window_closed"
        messages.append(err.value.message)
    assert messages == [
        "09:30 开始的就诊时段已开始，不能再预约，请选择其他时段",
        "10:00 开始的就诊时段已开始，不能再预约，请选择其他时段",
        "10:30 开始的就诊时段已停止预约（时段开始前 30 分钟截止），请选择其他时段",
    ]
    selectors.check_window_open(windows[3], rule=rule, now=clock.now())


def test_numbers_taken_offline_are_booked_and_marked(world, ten_am):
    session = make_session(world.cardiology, day=day(1), slots=4)
    assert services.take_slots_offline(session=session, count=3, now=clock.now()) == 3
    assert list(session.slots.order_by("seq").values_list("state", "his_code")) == [
        (Slot.State.BOOKED, Slot.OFFLINE_CODE)
    ] * 3 + [(Slot.State.FREE, "")]
    assert services.take_slots_offline(session=session, count=3, now=clock.now()) == 1


def test_check_bookable_reads_a_fresh_suspension_and_hidden_doctors(world, ten_am):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1))
    stale = Session.objects.get(id=session.id)
    services.suspend_session(session=session, reason="医生临时手术安排")
    with pytest.raises(Conflict) as err:
        selectors.check_bookable(stale, now=clock.now())
    assert err.value.code == "session_suspended"

    other = make_session(world.cardiology, doctor=world.doctor, day=day(2))
    world.doctor.is_active = False
    world.doctor.save()
    with pytest.raises(NotFound):
        selectors.check_bookable(other, now=clock.now())
