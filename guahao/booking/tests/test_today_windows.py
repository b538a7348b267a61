"""A session that has started keeps its later time windows bookable until the release rule's
book_before_minutes (default 30) before each window starts; the claim itself refuses a window
inside that margin, and the calendar and the window list agree with the claim."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Hold
from guahao.booking.services.hold import _claim_slot_by_id, _claim_slot_in_window
from guahao.booking.states import LIVE_HOLD_STATES
from guahao.errors import Conflict
from guahao.scheduling.models import ReleaseRule, Slot
from guahao.testing import (
    api_client,
    make_account,
    make_accounts,
    make_department,
    make_session,
    run_concurrently,
)

from .conftest import loosen_caps, ready_to_book


@pytest.fixture
def ten_am(world) -> Iterator[dt.datetime]:
    """Tomorrow 10:00 (Asia/Shanghai) is "now": later than the real clock, so the holds these tests
    leave are still live for the ledger check after each test."""
    moment = clock.at_local(clock.today() + dt.timedelta(days=1), dt.time(10, 0))
    with clock.frozen_at(moment):
        yield moment


@pytest.fixture
def clinic(world, ten_am):
    """Today's clinic from 09:00 to 12:10 in 10-minute windows, one number each: it has started."""
    return make_session(world.department, day=ten_am.date(), start=dt.time(9, 0), slots=19, window_minutes=10)


def _slot_at(session, hour: int, minute: int) -> Slot:
    return session.slots.get(window_start=clock.at_local(session.date, dt.time(hour, minute)))


def _me(world):
    account = make_account()
    ready_to_book(account, world.hospital)
    return api_client(account)


def test_a_window_starting_in_ten_minutes_is_refused_and_one_in_two_hours_is_held(world, clinic):
    me = _me(world)
    soon, later = _slot_at(clinic, 10, 10), _slot_at(clinic, 12, 0)

    refused = me.post("/api/v1/holds", {"slot_id": soon.id})
    assert refused.status_code == 409
    assert refused.json()["code"] == "window_closed"
    assert refused.json()["message"] == "10:10 开始的就诊时段已停止预约（时段开始前 30 分钟截止），请选择其他时段"
    assert Slot.objects.get(id=soon.id).state == Slot.State.FREE

    held = me.post("/api/v1/holds", {"slot_id": later.id})
    assert held.status_code == 201, held.json()
    assert held.json()["slot"]["window_start"].startswith(f"{clinic.date.isoformat()}T12:00:00")


def test_the_window_path_follows_the_same_rule(world, clinic):
    me = _me(world)
    started = me.post("/api/v1/holds", {"session_id": clinic.id, "window_start": f"{clinic.date}T09:30:00+08:00"})
    assert started.status_code == 409
    assert started.json()["message"] == "09:30 开始的就诊时段已开始，不能再预约，请选择其他时段"
    # A time without an offset is the hospital's local time.
    soon = me.post("/api/v1/holds", {"session_id": clinic.id, "window_start": f"{clinic.date}T10:30:00"})
    assert (soon.status_code, soon.json()["code"]) == (409, "window_closed")
    held = me.post("/api/v1/holds", {"session_id": clinic.id, "window_start": f"{clinic.date}T10:40:00"})
    assert held.status_code == 201, held.json()


def test_the_margin_is_the_release_rules(world, clinic):
    ReleaseRule.objects.filter(hospital=world.hospital).update(book_before_minutes=5)
    me = _me(world)
    assert me.post("/api/v1/holds", {"slot_id": _slot_at(clinic, 10, 10).id}).status_code == 201
    refused = me.post("/api/v1/holds", {"slot_id": _slot_at(clinic, 10, 0).id})
    assert refused.json()["message"] == "10:00 开始的就诊时段已开始，不能再预约，请选择其他时段"


def test_the_claim_itself_refuses_a_closing_window(world, clinic):
    """The condition is in the claiming UPDATE's WHERE on the slot row (a compare-and-set, as the
    sqlguard the whole suite runs under demands), not only in the reads before it."""
    now = clock.now()
    cutoff = now + dt.timedelta(minutes=30)
    until = now + dt.timedelta(minutes=10)
    soon = _slot_at(clinic, 10, 10)
    assert _claim_slot_by_id(slot_id=soon.id, session_id=clinic.id, now=now, cutoff=cutoff, until=until) is None
    assert _claim_slot_in_window(session_id=clinic.id, window=soon.window_start, now=now, cutoff=cutoff, until=until) is None
    assert Slot.objects.get(id=soon.id).state == Slot.State.FREE
    later = _slot_at(clinic, 10, 40)
    assert _claim_slot_in_window(session_id=clinic.id, window=later.window_start, now=now, cutoff=cutoff, until=until) .id == later.id
    Slot.objects.filter(id=later.id).update(state=Slot.State.FREE, held_until=None)  # leave the books clean


def test_the_calendar_counts_only_windows_still_taking_bookings(world, clinic):
    # Windows 10:40 … 12:00 take bookings: nine numbers.
    finished = make_session(world.department, day=clinic.date, start=dt.time(8, 0), slots=4)  # 08:00–10:00
    last_in_margin = make_session(world.department, day=clinic.date, start=dt.time(9, 30), slots=3)  # last 10:30
    body = api_client().get(f"/api/v1/departments/{world.department.id}/availability", days=1).json()
    [today] = body["days"]
    by_id = {s["id"]: s for s in today["sessions"]}
    assert (by_id[clinic.id]["status"], by_id[clinic.id]["remaining"]) == ("available", 9)
    assert (by_id[finished.id]["status"], by_id[finished.id]["remaining"]) == ("closed", 0)
    assert (by_id[last_in_margin.id]["status"], by_id[last_in_margin.id]["remaining"]) == ("closed", 0)
    assert today["has_slots"] is True

    slots = api_client().get(f"/api/v1/sessions/{clinic.id}/slots").json()
    assert (slots["session"]["status"], slots["session"]["remaining"]) == ("available", 9)
    windows = {w["window_start"][11:16]: w for w in slots["windows"]}
    assert (windows["10:30"]["closed"], windows["10:30"]["free"], windows["10:30"]["slot_id"]) == (True, 0, None)
    assert (windows["10:40"]["closed"], windows["10:40"]["free"]) == (False, 1)
    assert windows["10:40"]["slot_id"] == _slot_at(clinic, 10, 40).id

    closed = api_client().get(f"/api/v1/sessions/{last_in_margin.id}/slots").json()
    assert (closed["session"]["status"], closed["session"]["remaining"]) == ("closed", 0)
    assert all(w["closed"] and w["slot_id"] is None for w in closed["windows"])


def test_a_department_rule_sets_its_own_margin_in_the_calendar(world, clinic):
    child = make_department(world.hospital, name="高血压专病门诊", parent=world.department)
    ReleaseRule.objects.create(
        hospital=world.hospital, department=child, release_time=dt.time(0, 0), window_days=14, book_before_minutes=90
    )
    theirs = make_session(child, day=clinic.date, start=dt.time(9, 0), slots=19, window_minutes=10)
    body = api_client().get(f"/api/v1/departments/{world.department.id}/availability", days=1).json()
    remaining = {s["id"]: s["remaining"] for s in body["days"][0]["sessions"]}
    # 30 minutes: 10:40 … 12:00 (9); 90 minutes: 11:40 … 12:00 (3).
    assert (remaining[clinic.id], remaining[theirs.id]) == (9, 3)
    with pytest.raises(Conflict) as err:
        services.hold_slot(account=make_account(), slot_id=_slot_at(theirs, 11, 20).id)
    assert err.value.message == "11:20 开始的就诊时段已停止预约（时段开始前 90 分钟截止），请选择其他时段"


def test_tomorrows_sessions_are_untouched_by_the_margin(world, ten_am):
    session = make_session(world.department, day=ten_am.date() + dt.timedelta(days=1), start=dt.time(0, 0), slots=2)
    hold = services.hold_slot(account=make_account(), slot_id=session.slots.get(seq=1).id)
    assert hold.state == "held"


@pytest.mark.django_db(transaction=True)
def test_a_crowd_on_todays_later_windows_fills_only_the_open_ones(world, ten_am):
    """Threads on real connections (PostgreSQL in CI's second run): 60 clients, 19 numbers of which
    9 are in windows still taking bookings: exactly those 9 are held, once each."""
    loosen_caps(world.hospital)
    clinic = make_session(world.department, day=ten_am.date(), start=dt.time(9, 0), slots=19, window_minutes=10)
    slots = list(clinic.slots.order_by("seq").values_list("id", flat=True))
    crowd = make_accounts(60)
    targets = [slots[i % len(slots)] for i in range(len(crowd))]
    calls = [lambda a=a, s=s: services.hold_slot(account=a, slot_id=s) for a, s in zip(crowd, targets, strict=True)]
    results = run_concurrently(calls)
    losses = [r for ok, r in results if not ok]
    assert all(isinstance(r, Conflict) for r in losses), [r for r in losses if not isinstance(r, Conflict)][:3]
    assert {e.code for e in losses} == {"window_closed", "slot_taken"}
    held = Hold.objects.filter(session=clinic, state__in=LIVE_HOLD_STATES)
    assert sorted(held.values_list("slot__seq", flat=True)) == list(range(11, 20))
