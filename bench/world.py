"""The database side of bench/release_burst.py, run by it in a subprocess: build the bench world
(`setup`), count the SQL statements of one winning and one losing hold (`profile`, part of setup),
and check the invariants after a burst (`verify`).

It refuses to run unless GUAHAO_BENCH=1 and GUAHAO_DATABASE_URL are set, so it never touches a
developer's or a production database by accident: release_burst.py sets both to its own database.

    python bench/world.py setup --clients 2000 --out world.json
    python bench/world.py verify --spec spec.json --out result.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
from pathlib import Path

# Per-account caps high enough that no burst meets them (the fields are small integers).
LOOSE_CAP = 30000


def _django() -> None:
    if os.environ.get("GUAHAO_BENCH") != "1" or not os.environ.get("GUAHAO_DATABASE_URL"):
        sys.exit("world.py: run it through bench/release_burst.py (needs GUAHAO_BENCH=1 and GUAHAO_DATABASE_URL)")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guahao.settings")
    import django

    django.setup()


# --- setup ----------------------------------------------------------------------------------------


def setup(*, clients: int, large_slots: int, seed: int) -> dict:
    from django.db import transaction

    from guahao import clock, testing
    from guahao.scheduling.models import ReleaseRule, Slot

    with transaction.atomic():
        hospital = testing.make_hospital(name="压测医院")
        ReleaseRule.objects.filter(hospital=hospital).update(
            max_live_holds_per_account=LOOSE_CAP, max_holds_per_day_per_account=LOOSE_CAP
        )
        department = testing.make_department(hospital, name="压测科室")
        one = testing.make_session(department, slots=4)
        window = testing.make_session(department, slots=200, per_window=100, start=dt.time(13, 0))
        large = testing.make_session(
            department, slots=large_slots, per_window=20, window_minutes=5, start=dt.time(8, 0),
            day=clock.today() + dt.timedelta(days=2),
        )
        accounts = testing.make_accounts(clients)
        tokens = [testing.token_for(a) for a in accounts]

    first = Slot.objects.filter(session=one).order_by("seq").first()
    window_start = Slot.objects.filter(session=window).order_by("seq").values_list("window_start", flat=True).first()
    in_window = list(Slot.objects.filter(session=window, window_start=window_start).values_list("id", flat=True))
    large_ids = list(Slot.objects.filter(session=large).order_by("seq").values_list("id", flat=True))
    return {
        "tokens": tokens,
        "one-slot": {"session_id": one.id, "slot_id": first.id, "session_slots": 4},
        "window": {
            "session_id": window.id,
            "window_start": window_start.isoformat(),
            "window_slot_ids": in_window,
            "session_slots": 200,
        },
        "distinct": {
            "session_id": large.id,
            "slot_ids": random.Random(seed).sample(large_ids, clients),
            "session_slots": len(large_ids),
        },
        "profile": profile(department),
    }


def profile(department) -> dict:
    """The SQL statements of one winning and one losing POST /api/v1/holds, by slot and by window,
    through the whole request (auth, service, response), in a session of its own."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from guahao import testing
    from guahao.scheduling.models import Slot

    session = testing.make_session(department, slots=2, per_window=2, start=dt.time(18, 0))
    slots = list(Slot.objects.filter(session=session).order_by("seq"))
    clients = [testing.api_client(a) for a in testing.make_accounts(4)]
    window_body = {"session_id": session.id, "window_start": slots[0].window_start.isoformat()}
    cases = [
        ("by slot, win", clients[0], {"slot_id": slots[0].id}),
        ("by slot, lose", clients[1], {"slot_id": slots[0].id}),
        ("by window, win", clients[2], window_body),
        ("by window, lose", clients[3], window_body),
    ]
    out = {}
    for name, client, body in cases:
        with CaptureQueriesContext(connection) as ctx:
            response = client.post("/api/v1/holds", body)
        kinds: dict[str, int] = {}
        for query in ctx.captured_queries:
            sql = query["sql"].lstrip().upper()
            kind = sql.split(None, 1)[0] if sql else "?"
            if kind == "SELECT" and " FOR UPDATE" in sql:
                kind = "SELECT FOR UPDATE"
            kinds[kind] = kinds.get(kind, 0) + 1
        expected = 201 if name.endswith("win") else 409
        if response.status_code != expected:
            raise SystemExit(f"profile {name}: expected {expected}, got {response.status_code} {response.content[:300]!r}")
        out[name] = {"status": response.status_code, "statements": len(ctx.captured_queries), "kinds": kinds}
    return out


# --- verify ---------------------------------------------------------------------------------------


def verify(spec: dict) -> dict:
    """What the database says after a burst on one session. The caller compares it with what the
    HTTP answers said."""
    from django.db.models import Count

    from guahao import clock
    from guahao.booking.models import Hold
    from guahao.booking.states import LIVE_HOLD_STATES
    from guahao.notifications.models import OutboxEvent
    from guahao.scheduling.models import Slot

    now = clock.now()
    session_id = spec["session_id"]
    live = Hold.objects.filter(state__in=LIVE_HOLD_STATES)
    oversold = [
        [slot_id, n]
        for slot_id, n in live.values("slot_id").annotate(n=Count("id")).filter(n__gt=1).values_list("slot_id", "n")
    ]
    session_live = dict(live.filter(session_id=session_id).values_list("id", "slot_id"))
    held_slots = set(
        Slot.objects.filter(session_id=session_id, state=Slot.State.HELD, held_until__gt=now).values_list("id", flat=True)
    )
    mismatched = [
        [hold_id, slot_id] for hold_id, slot_id in spec["winners"] if session_live.get(hold_id) != slot_id
    ]
    targets = set(spec["target_slot_ids"])
    return {
        "oversold_slots": oversold,
        "live_holds": len(session_live),
        "live_hold_slots": len(set(session_live.values())),
        "held_slots": len(held_slots),
        "held_without_live_hold": len(held_slots - set(session_live.values())),
        "outside_target": sum(1 for slot_id in session_live.values() if slot_id not in targets),
        "winners_not_in_db": mismatched[:20],
        "booked_slots": Slot.objects.filter(session_id=session_id, state=Slot.State.BOOKED).count(),
        "holds_total": Hold.objects.count(),
        "outbox_total": OutboxEvent.objects.count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--clients", type=int, required=True)
    s.add_argument("--large-slots", type=int, required=True)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--out", type=Path, required=True)
    v = sub.add_parser("verify")
    v.add_argument("--spec", type=Path, required=True)
    v.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    _django()
    if args.command == "setup":
        result = setup(clients=args.clients, large_slots=args.large_slots, seed=args.seed)
    else:
        result = verify(json.loads(args.spec.read_text()))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
