"""Release-burst correctness with real threads and real connections: on PostgreSQL (CI runs the
suite with GUAHAO_DATABASE_URL) and on SQLite (the default)."""

from __future__ import annotations

import pytest

from guahao.booking import services
from guahao.booking.models import Hold
from guahao.booking.states import LIVE_HOLD_STATES
from guahao.errors import Conflict
from guahao.testing import make_accounts, make_session, run_concurrently

from .conftest import loosen_caps

CLIENTS = 200
ROUNDS = 20


@pytest.fixture
def crowd(world):
    loosen_caps(world.hospital)
    return make_accounts(CLIENTS)


def _outcomes(results):
    wins = [r for ok, r in results if ok]
    losses = [r for ok, r in results if not ok]
    unexpected = [r for r in losses if not isinstance(r, Conflict)]
    assert not unexpected, unexpected[:3]
    return wins, losses


@pytest.mark.django_db(transaction=True)
def test_200_clients_holding_the_same_slot_exactly_one_wins(world, crowd):
    for _ in range(ROUNDS):
        session = make_session(world.department, slots=1)
        slot = session.slots.get()
        results = run_concurrently(
            [lambda a=a, s=slot.id: services.hold_slot(account=a, slot_id=s) for a in crowd]
        )
        wins, losses = _outcomes(results)
        assert len(wins) == 1
        assert {e.code for e in losses} == {"slot_taken"}
        assert Hold.objects.filter(slot=slot, state__in=LIVE_HOLD_STATES).count() == 1


@pytest.mark.django_db(transaction=True)
def test_200_clients_holding_next_free_in_a_window_of_20_fill_it_exactly(world, crowd):
    for _ in range(ROUNDS):
        session = make_session(world.department, slots=20, per_window=20)
        window = session.slots.first().window_start
        results = run_concurrently(
            [
                lambda a=a, s=session.id, w=window: services.hold_slot(account=a, session_id=s, window_start=w)
                for a in crowd
            ]
        )
        wins, losses = _outcomes(results)
        assert len(wins) == 20
        assert sorted(h.slot.seq for h in wins) == list(range(1, 21))
        assert {e.code for e in losses} == {"window_full"}
        assert Hold.objects.filter(session=session, state__in=LIVE_HOLD_STATES).count() == 20


@pytest.mark.django_db(transaction=True)
def test_one_account_racing_for_many_slots_stays_within_its_live_hold_cap(world):
    from guahao.scheduling.models import ReleaseRule
    from guahao.testing import make_account

    ReleaseRule.objects.filter(hospital=world.hospital).update(max_live_holds_per_account=2)
    account = make_account()
    session = make_session(world.department, slots=20)
    slots = list(session.slots.values_list("id", flat=True))
    results = run_concurrently([lambda s=s: services.hold_slot(account=account, slot_id=s) for s in slots])
    wins, losses = _outcomes(results)
    assert len(wins) == 2
    assert {e.code for e in losses} == {"live_hold_limit"}
    assert Hold.objects.filter(account=account, state__in=LIVE_HOLD_STATES).count() == 2
