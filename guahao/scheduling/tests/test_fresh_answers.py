"""Schedule answers reused for a second (guahao/freshness.py): never older than FRESH_SECONDS after
a change, a phone's ETag answered 304, and the free counts served always those of a recount from
the slot rows once the second has passed, whatever claims, releases, expiries and 停诊 did."""

from __future__ import annotations

import contextlib
import datetime as dt
import random

import pytest

from guahao import clock
from guahao.booking import services as booking
from guahao.booking.models import Hold
from guahao.booking.states import LIVE_HOLD_STATES
from guahao.errors import Conflict
from guahao.scheduling import services as scheduling
from guahao.scheduling.models import ReleaseRule, Session, Slot
from guahao.scheduling.selectors import booking_cutoff, free_slot_q, release_rule_for
from guahao.testing import api_client, make_accounts, make_session

pytestmark = pytest.mark.django_db

A_SECOND = dt.timedelta(seconds=1, milliseconds=1)


def _slots(session: Session) -> dict:
    return api_client().get(f"/api/v1/sessions/{session.id}/slots").json()


def test_an_answer_is_reused_but_never_older_than_a_second_after_a_change(world, fresh):
    session = make_session(world.cardiology, slots=4)
    [patient] = make_accounts(1)
    before = _slots(session)
    assert before["session"]["remaining"] == 4
    changed_at = clock.now()
    booking.hold_slot(account=patient, slot_id=session.slots.get(seq=1).id)
    assert _slots(session) == before  # the same second: the answer already built
    with clock.travel(clock.now() - changed_at + A_SECOND):
        assert _slots(session)["session"]["remaining"] == 3


def test_a_phone_with_the_current_etag_gets_304_and_a_new_body_after_a_change(world, fresh):
    session = make_session(world.cardiology, slots=4)
    client = api_client()
    first = client.client.get(f"/api/v1/sessions/{session.id}/slots")
    etag = first["ETag"]
    assert first.status_code == 200 and first["Cache-Control"] == "no-cache"
    again = client.client.get(f"/api/v1/sessions/{session.id}/slots", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    [patient] = make_accounts(1)
    booking.hold_slot(account=patient, slot_id=session.slots.get(seq=2).id)
    with clock.travel(A_SECOND):
        changed = client.client.get(f"/api/v1/sessions/{session.id}/slots", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert changed.json()["session"]["remaining"] == 3


def _recount(session: Session, now: dt.datetime) -> tuple[int, dict[str, int]]:
    """Free numbers still bookable, counted from the rows: the session's and per time window."""
    session.refresh_from_db()
    cutoff = booking_cutoff(release_rule_for(session), now)
    free = Slot.objects.filter(free_slot_q(now), session=session, window_start__gt=cutoff)
    per_window = {clock.local(s).isoformat(): 0 for s in session.slots.values_list("window_start", flat=True)}
    for start in free.values_list("window_start", flat=True):
        per_window[clock.local(start).isoformat()] += 1
    if session.status == Session.Status.SUSPENDED:
        return 0, dict.fromkeys(per_window, 0)
    return sum(per_window.values()), per_window


def test_served_free_counts_equal_a_recount_after_random_claims_releases_expiries_and_suspensions(world, fresh):
    ReleaseRule.objects.filter(hospital=world.hospital).update(max_live_holds_per_account=50, max_holds_per_day_per_account=500)
    sessions = [make_session(world.cardiology, slots=6, per_window=2, start=dt.time(h, 0)) for h in (8, 14)]
    patients = make_accounts(5)
    rng = random.Random(2026)
    with contextlib.ExitStack() as time_moves:
        for step in range(40):
            op = rng.choice(["claim", "claim", "claim", "release", "expire", "suspend"] if step > 30 else ["claim", "claim", "release", "expire"])
            session = rng.choice(sessions)
            if op == "claim":
                slot_id = rng.choice(list(session.slots.values_list("id", flat=True)))
                with contextlib.suppress(Conflict):
                    booking.hold_slot(account=rng.choice(patients), slot_id=slot_id)
            elif op == "release":
                hold = Hold.objects.filter(session=session, state__in=LIVE_HOLD_STATES, expires_at__gt=clock.now()).first()
                if hold is not None:
                    booking.release_hold(account=hold.account, hold_id=hold.id)
            elif op == "expire":
                # Every live hold lapses (as lock_minutes passing would), with or without the sweeper.
                time_moves.enter_context(clock.travel(dt.timedelta(minutes=16)))
                if rng.random() < 0.5:
                    booking.expire_holds()
            else:
                scheduling.suspend_session(session=session, reason="医生临时出诊任务")
            time_moves.enter_context(clock.travel(A_SECOND))
            now = clock.now()
            for each in sessions:
                remaining, per_window = _recount(each, now)
                served = _slots(each)
                assert served["session"]["remaining"] == remaining, (step, op)
                assert {w["window_start"]: w["free"] for w in served["windows"]} == per_window, (step, op)
                calendar = api_client().get(f"/api/v1/departments/{world.cardiology.id}/availability", days=7).json()
                [listed] = [s for d in calendar["days"] for s in d["sessions"] if s["id"] == each.id]
                assert listed["remaining"] == remaining, (step, op)
