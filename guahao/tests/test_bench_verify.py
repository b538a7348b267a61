"""The release-burst benchmark's verdict comes from the database, not from what the HTTP answers
said: bench/world.py `verify` finds a slot sold twice and wins the database does not have."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import pytest
from django.db import connection

from guahao import clock
from guahao.booking.models import Hold
from guahao.booking.states import HoldState
from guahao.scheduling.models import Slot
from guahao.testing import make_accounts, make_department, make_hospital, make_session

pytestmark = pytest.mark.django_db

_spec = importlib.util.spec_from_file_location("bench_world", Path(__file__).resolve().parents[2] / "bench" / "world.py")
world = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(world)


def _live_hold(account, slot: Slot) -> Hold:
    now = clock.now()
    return Hold.objects.create(
        account=account, slot=slot, session=slot.session, state=HoldState.HELD, fee_fen=100,
        expires_at=now + dt.timedelta(minutes=15), created_at=now, updated_at=now,
    )


def test_a_slot_held_twice_is_counted_as_oversold_from_the_rows():
    session = make_session(make_department(make_hospital()), slots=3)
    first, second = make_accounts(2)
    slot = session.slots.get(seq=1)
    Slot.objects.filter(id=slot.id).update(state=Slot.State.HELD, held_until=clock.now() + dt.timedelta(minutes=15))
    _live_hold(first, slot)
    clean = world.verify({"session_ids": [session.id], "asked_slot_ids": [slot.id], "answered_wins": 1})
    assert clean["oversold_slots"] == [] and clean["wins_beyond_db"] == 0 and clean["asked_unsold"] == 0

    # What the unique index forbids, forced in this test's transaction: a second live hold.
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX one_live_hold_per_slot")  # a partial unique index on both databases
    _live_hold(second, slot)
    sold_twice = world.verify({"session_ids": [session.id], "asked_slot_ids": [slot.id], "answered_wins": 1})
    assert sold_twice["oversold_slots"] == [[slot.id, 2]]


def test_wins_answered_over_http_but_missing_from_the_database_are_counted():
    session = make_session(make_department(make_hospital()), slots=2)
    result = world.verify({"session_ids": [session.id], "asked_slot_ids": [], "answered_wins": 2})
    assert result["wins_beyond_db"] == 2  # two 201s, no live hold in the database
