"""The database side of bench/release_burst.py, run by it in a subprocess: build the bench world
(`setup`: accounts with tokens, a pool of free slots for winning holds, one slot to sell out, a
session per randomized burst, a contiguous pool for pgbench's B_sql, and the SQL profile of one
hold), and check the invariants after a run (`verify`).

With --his-url the hospital's HIS is the HIS simulator (HIS 锁号): every session a hold can ask
for is made there first (its control API) and synced into the hospital by guahao's own schedule
sync, so each lock the hold path sends names a session and a number the HIS knows. pgbench's pool
stays local: B_sql runs SQL only, it never reaches the HIS.

It refuses to run unless GUAHAO_BENCH=1 and GUAHAO_DATABASE_URL are set, so it never touches a
developer's or a production database by accident: release_burst.py sets both to its own database.

    python bench/world.py setup --accounts 2000 --pool 60000 --tokens tokens.txt --out world.json
    GUAHAO_BENCH_HIS_SECRET=… python bench/world.py setup … --his-url http://127.0.0.1:PORT --his-hospital BENCH
    python bench/world.py verify --spec spec.json --out result.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import urllib.request
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
# HIS sessions: days 1..HIS_DAYS, inside the hospital's 14-day booking window, one per department
# and period (sync refuses a second department session on the same date and period).
HIS_DAYS = 13
HIS_PERIODS = ("morning", "afternoon", "evening")
HIS_SYNC_BATCH = 10  # sessions per sync: each answer of the simulator a few MB at most


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


def setup(
    *, accounts: int, pool: int, pgbench_pool: int, bursts: list[dict], tokens_path: Path, his: dict | None = None
) -> dict:
    from django.db import transaction

    from guahao import testing
    from guahao.catalog.models import Department
    from guahao.his.models import HisConnection
    from guahao.scheduling.models import ReleaseRule, Slot

    with transaction.atomic():
        hospital = testing.make_hospital(name="压测医院")
        ReleaseRule.objects.filter(hospital=hospital).update(
            max_live_holds_per_account=LOOSE_CAP, max_holds_per_day_per_account=LOOSE_CAP
        )
        made = testing.make_accounts(accounts)
        # pgbench's holds (tens of thousands) belong to an account of their own: on a patient's,
        # they would meet that patient's live-hold cap in the loads that follow.
        pgbench_account = testing.make_account()
        tokens = [testing.token_for(a) for a in made]
        if his is None:
            departments = [testing.make_department(hospital, name=f"压测科室{i + 1}") for i in range(POOL_DEPARTMENTS)]
            made_sessions = _local_sessions(departments, pool=pool, bursts=bursts)
        else:
            HisConnection.objects.create(
                hospital=hospital, mode=HisConnection.Mode.HIS_LOCK, base_url=his["url"],
                hospital_code=his["hospital"], secret=his["secret"],
            )
    pg_first_day = POOL_DAYS + 1
    if his is not None:
        made_sessions, last_day = _his_sessions(hospital, his["url"], pool=pool, bursts=bursts)
        departments = list(Department.objects.filter(hospital=hospital).order_by("id"))
        pg_first_day = last_day + 1  # pgbench's local sessions on days of their own
    pool_sessions = made_sessions["pool"]
    pool_ids = list(Slot.objects.filter(session_id__in=pool_sessions).order_by("id").values_list("id", flat=True))
    soldout_id = made_sessions["soldout"]
    planned = [{**burst, "session_id": sid} for burst, sid in zip(bursts, made_sessions["bursts"], strict=True)]
    # pgbench claims ids lo..hi by arithmetic, so its pool must be one contiguous run of ids.
    pg_sessions, pg_ids = _pool(departments, pgbench_pool, first_day=pg_first_day) if pgbench_pool else ([], [])
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
        "soldout": {"session_id": soldout_id, "slot_id": Slot.objects.get(session_id=soldout_id).id},
        "bursts": planned,
        "pgbench": {
            "session_ids": pg_sessions,
            "lo": pg_ids[0] if pg_ids else None,
            "hi": pg_ids[-1] if pg_ids else None,
            "first_session_id": pg_sessions[0] if pg_sessions else None,
            "session_slots": POOL_SESSION_SLOTS,
            "account_id": pgbench_account.id,
            "fee_fen": 1000,
        },
        "profile": profile(made_sessions.get("profile") or _profile_session(departments[0])),
    }


def _local_sessions(departments: list, *, pool: int, bursts: list[dict]) -> dict:
    """The hospital's own sessions (the local pool): ids by role."""
    from guahao import clock, testing

    pool_sessions, _ = _pool(departments, pool, first_day=1)
    soldout = testing.make_session(departments[0], slots=1, start=dt.time(18, 0))
    burst_sessions = []
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
        burst_sessions.append(session.id)
    return {"pool": pool_sessions, "soldout": soldout.id, "bursts": burst_sessions}


def _his_control(url: str, path: str, document: dict) -> dict:
    request = urllib.request.Request(
        f"{url}/_control/{path}", data=json.dumps(document).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (the simulator, on loopback)
        return json.loads(response.read())


class HisSchedule:
    """Sessions made in the HIS simulator through its control API, a department session per
    (day, period, department), and synced into the hospital in batches by guahao's own sync."""

    def __init__(self, hospital, url: str, *, sessions: int) -> None:
        from guahao import clock

        self.hospital, self.url = hospital, url
        departments = max(POOL_DEPARTMENTS, -(-sessions // (HIS_DAYS * len(HIS_PERIODS))))
        self.places = iter(
            [(day, period, d) for day in range(1, HIS_DAYS + 1) for period in HIS_PERIODS for d in range(departments)]
        )
        self.today = clock.today()
        self.pending = 0
        self.last_day = 0

    def add(self, *, numbers: int, window_minutes: int | None = None, windows: int | None = None) -> str:
        """A session of `numbers` numbers in windows of `window_minutes`, or cut into `windows`
        windows of equal length: its HIS code."""
        from guahao.his.simulator.inventory import PERIODS

        day, period, d = next(self.places)
        if windows:
            first, last = PERIODS[period]
            length = dt.datetime.combine(self.today, last) - dt.datetime.combine(self.today, first)
            window_minutes = int(length.total_seconds() // 60) // windows
        answer = _his_control(self.url, "sessions", {
            "department_code": f"BD{d + 1:02d}", "date": (self.today + dt.timedelta(days=day)).isoformat(),
            "period": period, "numbers": numbers, "window_minutes": window_minutes, "registration_type": "普通号",
            "fee_fen": 1000,
        })
        self.last_day = max(self.last_day, day)
        self.pending += 1
        if self.pending >= HIS_SYNC_BATCH:
            self.sync()
        return answer["code"]

    def sync(self) -> None:
        from guahao.his.sync import sync_schedule

        if self.pending:
            report = sync_schedule(hospital=self.hospital, days=HIS_DAYS + 1)
            if report.notes:
                raise SystemExit("HIS sync: " + "; ".join(report.notes[:5]))
            self.pending = 0

    def session_ids(self, codes: list[str]) -> list[int]:
        from guahao.scheduling.models import Session

        self.sync()
        found = dict(Session.objects.filter(hospital=self.hospital, his_code__in=codes).values_list("his_code", "id"))
        missing = [c for c in codes if c not in found]
        if missing:
            raise SystemExit(f"HIS sync: {len(missing)} sessions made in the simulator were not synced, e.g. {missing[0]}")
        return [found[c] for c in codes]


def _his_sessions(hospital, url: str, *, pool: int, bursts: list[dict]) -> tuple[dict, int]:
    """The same roles as _local_sessions, made in the HIS simulator and synced: (ids by role, the
    last day used)."""
    sizes = [min(POOL_SESSION_SLOTS, pool - n) for n in range(0, pool, POOL_SESSION_SLOTS)]
    schedule = HisSchedule(hospital, url, sessions=len(sizes) + len(bursts) + 2)
    pool_codes = [schedule.add(numbers=n, window_minutes=5) for n in sizes]
    soldout = schedule.add(numbers=1, window_minutes=30)
    burst_codes = []
    for burst in bursts:
        if burst["scenario"] == "one-slot":
            burst_codes.append(schedule.add(numbers=4, window_minutes=30))
        elif burst["scenario"] == "window":
            burst_codes.append(schedule.add(numbers=WINDOW_SESSION_SLOTS, windows=WINDOW_SESSION_SLOTS // WINDOW_SLOTS))
        else:
            burst_codes.append(schedule.add(numbers=burst["connections"], window_minutes=5))
    profile = schedule.add(numbers=2, windows=1)  # two numbers in one window: by slot and by window
    ids = schedule.session_ids([*pool_codes, soldout, *burst_codes, profile])
    n = len(pool_codes)
    made = {"pool": ids[:n], "soldout": ids[n], "bursts": ids[n + 1 : n + 1 + len(bursts)], "profile": ids[-1]}
    return made, schedule.last_day


def _profile_session(department):
    from guahao import testing

    return testing.make_session(department, slots=2, per_window=2, start=dt.time(18, 0)).id


def profile(session_id: int) -> dict:
    """The SQL statements of one winning and one losing POST /api/v1/holds, by slot and by window,
    through the whole request (auth, service, response), in a session of its own (two numbers in
    one window)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from guahao import testing
    from guahao.scheduling.models import Slot

    slots = list(Slot.objects.filter(session_id=session_id).order_by("seq"))
    clients = [testing.api_client(a) for a in testing.make_accounts(4)]
    window_body = {"session_id": session_id, "window_start": slots[0].window_start.isoformat()}
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
    from guahao.booking.services.hold import tidy_dead_hold
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
            # What the hold.expired job does once a hold lapses: its lock released at the HIS (with
            # the local pool, nothing to release), so the HIS too lets the number go again.
            for hold_id in Hold.objects.filter(slot_id=slot_id, session_id__in=sessions).values_list("id", flat=True):
                tidy_dead_hold(hold_id=hold_id)
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
    s.add_argument("--his-url", help="the HIS simulator's base URL: the hospital's HIS (default: the local pool)")
    s.add_argument("--his-hospital", default="BENCH", help="the hospital code the simulator serves")
    s.add_argument("--out", type=Path, required=True)
    v = sub.add_parser("verify")
    v.add_argument("--spec", type=Path, required=True)
    v.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    _django()
    if args.command == "setup":
        bursts = json.loads(args.bursts.read_text()) if args.bursts else []
        # The simulator's shared secret comes by environment, never on a command line.
        secret = os.environ.get("GUAHAO_BENCH_HIS_SECRET", "")
        his = {"url": args.his_url, "hospital": args.his_hospital, "secret": secret} if args.his_url else None
        result = setup(
            accounts=args.accounts, pool=args.pool, pgbench_pool=args.pgbench_pool, bursts=bursts, tokens_path=args.tokens,
            his=his,
        )
    else:
        result = verify(json.loads(args.spec.read_text()))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
