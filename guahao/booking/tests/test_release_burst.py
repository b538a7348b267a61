"""The release burst's fast paths (docs/benchmarks.md): the sold-out memory can only refuse, is
forgotten when a number comes free here, and lapses within FRESH_SECONDS everywhere else."""

from __future__ import annotations

import contextlib
import datetime as dt
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Hold
from guahao.booking.soldout import sold_out
from guahao.booking.states import LIVE_HOLD_STATES
from guahao.booking.tests.conftest import loosen_caps
from guahao.errors import Conflict
from guahao.testing import make_account, make_accounts, make_session, run_concurrently

pytestmark = pytest.mark.django_db

A_SECOND = dt.timedelta(seconds=1, milliseconds=1)


def test_a_number_seen_taken_is_refused_from_memory_without_a_query(world, fresh):
    first, second = make_account(), make_account()
    slot = world.session.slots.get(seq=1)
    services.hold_slot(account=first, slot_id=slot.id)
    with pytest.raises(Conflict):
        services.hold_slot(account=second, slot_id=slot.id)  # read from the database, remembered
    with CaptureQueriesContext(connection) as queries, pytest.raises(Conflict) as refused:
        services.hold_slot(account=second, slot_id=slot.id)
    assert refused.value.code == "slot_taken"
    assert len(queries) == 0


def test_the_memory_can_only_refuse_and_lapses_within_a_second(world, fresh):
    # Another process saw the number taken a moment ago; here it is free. The memory refuses it for
    # at most FRESH_SECONDS, and never makes a hold: the database's claim does.
    slot = world.session.slots.get(seq=2)
    sold_out.mark(("slot", slot.id))
    patient = make_account()
    with pytest.raises(Conflict):
        services.hold_slot(account=patient, slot_id=slot.id)
    assert not Hold.objects.filter(slot=slot).exists()
    with clock.travel(A_SECOND):
        hold = services.hold_slot(account=patient, slot_id=slot.id)
    assert Hold.objects.get(slot=slot).id == hold.id


def test_a_number_freed_in_this_process_is_offered_again_at_once(world, fresh):
    first, second = make_account(), make_account()
    slot = world.session.slots.get(seq=3)
    hold = services.hold_slot(account=first, slot_id=slot.id)
    with pytest.raises(Conflict):
        services.hold_slot(account=second, slot_id=slot.id)
    services.release_hold(account=first, hold_id=hold.id)
    assert services.hold_slot(account=second, slot_id=slot.id).slot_id == slot.id


def test_a_full_window_is_refused_from_memory_until_a_number_comes_free(world, fresh):
    session = make_session(world.department, slots=2, per_window=2, start=dt.time(14, 0))
    window = session.slots.first().window_start
    patients = make_accounts(3)
    holds = [services.hold_slot(account=p, session_id=session.id, window_start=window) for p in patients[:2]]
    with pytest.raises(Conflict) as full:
        services.hold_slot(account=patients[2], session_id=session.id, window_start=window)
    assert full.value.code == "window_full"
    with CaptureQueriesContext(connection) as queries, pytest.raises(Conflict):
        services.hold_slot(account=patients[2], session_id=session.id, window_start=window)
    assert len(queries) == 0
    services.release_hold(account=patients[0], hold_id=holds[0].id)
    assert services.hold_slot(account=patients[2], session_id=session.id, window_start=window).session_id == session.id


@pytest.mark.django_db(transaction=True)
def test_racing_patients_never_get_more_holds_than_numbers_with_the_memory_on(world, fresh):
    if connection.vendor != "postgresql":
        pytest.skip("real concurrency needs PostgreSQL")
    loosen_caps(world.hospital)
    session = make_session(world.department, slots=6, start=dt.time(15, 0))
    slots = list(session.slots.values_list("id", flat=True))
    patients = make_accounts(24)
    rng = random.Random(12)

    def ask(account, wanted: list[int]):
        def run() -> list[int]:
            won = []
            for slot_id in wanted:
                with contextlib.suppress(Conflict):
                    won.append(services.hold_slot(account=account, slot_id=slot_id).slot_id)
            return won

        return run

    results = run_concurrently([ask(p, [rng.choice(slots) for _ in range(5)]) for p in patients])
    assert all(ok for ok, _ in results), results
    granted = [slot_id for _, won in results for slot_id in won]
    live = list(Hold.objects.filter(session=session, state__in=LIVE_HOLD_STATES).values_list("slot_id", flat=True))
    assert sorted(granted) == sorted(live)  # every grant is in the database, and no more
    assert len(live) == len(set(live)) <= len(slots)
