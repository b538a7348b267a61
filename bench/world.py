"""The database side of bench/release_burst.py, run by it in a subprocess: build the bench world
(`setup`: accounts with tokens, a pool of free slots for winning holds, one slot to sell out, a
session per randomized burst, a contiguous pool for pgbench's B_sql, and the SQL profile of one
hold), and check the invariants after a run (`verify`).

It refuses to run unless GUAHAO_BENCH=1 and GUAHAO_DATABASE_URL are set, so it never touches a
developer's or a production database by accident: release_burst.py sets both to its own database.

    python bench/world.py setup --accounts 2000 --pool 60000 --tokens tokens.txt --out world.json
    python bench/world.py verify --spec spec.json --out result.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

# Per-account caps high enough that no run meets them (the fields are small integers).
LOOSE_CAP = 30000
# The hold pool and pgbench's pool are cut into sessions of this many numbers, 20 per 5-minute
# window (08:00 to 12:10), spread over departments and days as a real release day is.
POOL_SESSION_SLOTS = 1000
POOL_DEPARTMENTS = 10
POOL_DAYS = 6
WINDOW_SESSION_SLOTS = 200
WINDOW_SLOTS = 100


def _django() -> None:
    if os.environ.get("GUAHAO_BENCH") != "1" or not os.environ.get("GUAHAO_DATABASE_URL"):
        sys.exit("world.py: run it through bench/release_burst.py (needs GUAHAO_BENCH=1 and GUAHAO_DATABASE_URL)")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guahao.settings")
    import django

    django.setup()


# --- setup ----------------------------------------------------------------------------------------


def _pool(departments: list, total: int, *, first_day: int) -> tuple[list[int], list[int]]:
    """`total` free slots in sessions of POOL_SESSION_SLOTS: (session ids, slot ids in order)."""
    from guahao import clock, testing
    from guahao.scheduling.models import Slot

    sessions = []
    made = 0
    while made < total:
        n = min(POOL_SESSION_SLOTS, total - made)
        k = len(sessions)
        day = clock.today() + dt.timedelta(days=first_day + (k // POOL_DEPARTMENTS) % POOL_DAYS)
        start = dt.time(8, 0) if (k // (POOL_DEPARTMENTS * POOL_DAYS)) % 2 == 0 else dt.time(13, 0)
        sessions.append(
            testing.make_session(departments[k % len(departments)], day=day, slots=n, per_window=20, window_minutes=5, start=start)
        )
        made += n
    ids = [s.id for s in sessions]
    return ids, list(Slot.objects.filter(session_id__in=ids).order_by("id").values_list("id", flat=True))


def setup(*, accounts: int, pool: int, pgbench_pool: int, bursts: list[dict], tokens_path: Path) -> dict:
    from django.db import transaction

    from guahao import clock, testing
    from guahao.scheduling.models import ReleaseRule, Slot

    with transaction.atomic():
        hospital = testing.make_hospital(name="压测医院")
        ReleaseRule.objects.filter(hospital=hospital).update(
            max_live_holds_per_account=LOOSE_CAP, max_holds_per_day_per_account=LOOSE_CAP
        )
        departments = [testing.make_department(hospital, name=f"压测科室{i + 1}") for i in range(POOL_DEPARTMENTS)]
        made = testing.make_accounts(accounts)
        tokens = [testing.token_for(a) for a in made]
        pool_sessions, pool_ids = _pool(departments, pool, first_day=1)
        soldout = testing.make_session(departments[0], slots=1, start=dt.time(18, 0))
        planned = []
        for i, burst in enumerate(bursts):
            department = departments[i % len(departments)]
            day = clock.today() + dt.timedelta(days=1 + i % POOL_DAYS)
            if burst["scenario"] == "one-slot":
                session = testing.make_session(department, day=day, slots=4, start=dt.time(19, 0))
            elif burst["scenario"] == "window":
                session = testing.make_session(
                    department, day=day, slots=WINDOW_SESSION_SLOTS, per_window=WINDOW_SLOTS, start=dt.time(19, 0)
                )
            else:
                session = testing.make_session(
                    department, day=day, slots=burst["connections"], per_window=20, window_minutes=5, start=dt.time(14, 0)
                )
            planned.append({**burst, "session_id": session.id})
    # pgbench claims ids lo..hi by arithmetic, so its pool must be one contiguous run of ids.
    pg_sessions, pg_ids = _pool(departments, pgbench_pool, first_day=POOL_DAYS + 1) if pgbench_pool else ([], [])
    # … and its sessions one contiguous run too, POOL_SESSION_SLOTS each: slot → session by arithmetic.
    if pg_ids and (
        pg_ids[-1] - pg_ids[0] + 1 != len(pg_ids) or pg_sessions[-1] - pg_sessions[0] + 1 != len(pg_sessions)
    ):
        raise SystemExit("pgbench pool: slot or session ids are not contiguous (another writer during setup?)")
    tokens_path.write_text("\n".join(tokens) + "\n")

    for burst in planned:
        slots = Slot.objects.filter(session_id=burst["session_id"]).order_by("seq")
        if burst["scenario"] == "one-slot":
            burst["slot_ids"] = [slots.first().id]
        elif burst["scenario"] == "window":
            first = slots.first()
            burst["window_start"] = first.window_start.isoformat()
            burst["slot_ids"] = list(slots.filter(window_start=first.window_start).values_list("id", flat=True))
        else:
            burst["slot_ids"] = list(slots.values_list("id", flat=True))
    return {
        "tokens": len(tokens),
        "account_ids": [a.id for a in made[:1]],
        "pool_session_ids": pool_sessions,
        "pool_slot_ids": pool_ids,
        "soldout": {"session_id": soldout.id, "slot_id": Slot.objects.get(session=soldout).id},
        "bursts": planned,
        "pgbench": {
            "session_ids": pg_sessions,
            "lo": pg_ids[0] if pg_ids else None,
            "hi": pg_ids[-1] if pg_ids else None,
            "first_session_id": pg_sessions[0] if pg_sessions else None,
            "session_slots": POOL_SESSION_SLOTS,
            "account_id": made[0].id,
            "fee_fen": 1000,
        },
        "profile": profile(departments[0]),
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
    """What the database says after a run on some sessions; the caller compares it with what the
    HTTP answers said.

    spec: session_ids (the run's sessions), asked_slot_ids (slots some request asked for: each must
    end held by exactly one live hold unless `may_stay_free`), answered_wins (201s wrk counted),
    expire (then let every live hold of those sessions lapse and check the asked slots are free
    again and claimable through the API, `claim_sample` of them for real)."""
    from django.db.models import Count

    from guahao import clock
    from guahao.booking.models import Hold
    from guahao.booking.states import LIVE_HOLD_STATES
    from guahao.scheduling.models import Slot

    now = clock.now()
    sessions = spec["session_ids"]
    asked = set(spec.get("asked_slot_ids", []))
    live = Hold.objects.filter(state__in=LIVE_HOLD_STATES, expires_at__gt=now)
    oversold = list(
        Hold.objects.filter(state__in=LIVE_HOLD_STATES)
        .values("slot_id").annotate(n=Count("id")).filter(n__gt=1).values_list("slot_id", "n")[:20]
    )
    live_slots = dict(live.filter(session_id__in=sessions).values_list("id", "slot_id"))
    held = set(
        Slot.objects.filter(session_id__in=sessions, state=Slot.State.HELD, held_until__gt=now).values_list("id", flat=True)
    )
    hold_slots = set(live_slots.values())
    out = {
        "oversold_slots": [list(row) for row in oversold],
        "live_holds": len(live_slots),
        "live_hold_slots": len(hold_slots),
        "held_slots": len(held),
        "held_without_live_hold": len(held - hold_slots),
        "live_hold_on_unheld_slot": len(hold_slots - held),
        "asked": len(asked),
        "asked_unsold": len(asked - hold_slots),
        "outside_asked": len(hold_slots - asked) if asked else 0,
        "booked_slots": Slot.objects.filter(session_id__in=sessions, state=Slot.State.BOOKED).count(),
    }
    # Answered wins the database does not have: more 201s than live holds.
    out["wins_beyond_db"] = max(0, int(spec.get("answered_wins", 0)) - len(live_slots))
    if spec.get("expire"):
        out.update(_expire_and_claim(sessions, asked or hold_slots, int(spec.get("claim_sample", 3))))
    return out


def _expire_and_claim(sessions: list[int], slots: set[int], sample: int) -> dict:
    """Let the locks lapse (as if lock_minutes had passed) and check every slot is claimable again;
    claim `sample` of them through the API with a fresh account, as a patient would."""
    from guahao import clock, testing
    from guahao.booking.models import Hold
    from guahao.booking.states import LIVE_HOLD_STATES
    from guahao.scheduling.models import Slot
    from guahao.scheduling.selectors import free_slot_q

    past = clock.now() - dt.timedelta(seconds=1)
    Hold.objects.filter(session_id__in=sessions, state__in=LIVE_HOLD_STATES).update(expires_at=past)
    Slot.objects.filter(session_id__in=sessions, state=Slot.State.HELD).update(held_until=past)
    now = clock.now()
    free = set(Slot.objects.filter(free_slot_q(now), id__in=slots).values_list("id", flat=True))
    not_claimable = len(slots - free)
    failed = []
    if free and sample:
        # A phone no other process of this run gave out (make_phone counts from 1 in each process).
        client = testing.api_client(testing.make_account(phone=f"138{time.time_ns() % 10**8:08d}"))
        for slot_id in sorted(free)[:sample]:
            response = client.post("/api/v1/holds", {"slot_id": slot_id})
            if response.status_code != 201:
                failed.append([slot_id, response.status_code])
    return {"unsold_after_expiry": not_claimable + len(failed), "claimed_after_expiry": min(len(free), sample) - len(failed),
            "claim_failures": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--accounts", type=int, required=True)
    s.add_argument("--pool", type=int, required=True, help="free slots for winning holds")
    s.add_argument("--pgbench-pool", type=int, default=0, help="free slots for pgbench's B_sql (PostgreSQL)")
    s.add_argument("--bursts", type=Path, help="JSON list of {scenario, connections, seed}")
    s.add_argument("--tokens", type=Path, required=True, help="write the accounts' bearer tokens here, one a line")
    s.add_argument("--out", type=Path, required=True)
    v = sub.add_parser("verify")
    v.add_argument("--spec", type=Path, required=True)
    v.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    _django()
    if args.command == "setup":
        bursts = json.loads(args.bursts.read_text()) if args.bursts else []
        result = setup(
            accounts=args.accounts, pool=args.pool, pgbench_pool=args.pgbench_pool, bursts=bursts, tokens_path=args.tokens
        )
    else:
        result = verify(json.loads(args.spec.read_text()))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
