"""The database side of bench/browse.py, run by it in a subprocess: build the hospital patients
browse (`setup`), fill the database with other hospitals' slots up to a total (`grow`), and time the
availability query the API runs (`time`).

Like bench/world.py it refuses to run unless GUAHAO_BENCH=1 and GUAHAO_DATABASE_URL are set.

    python bench/browse_world.py setup --out world.json
    python bench/browse_world.py grow --total 1000000 --out grown.json
    python bench/browse_world.py time --department 3 --runs 30 --out timing.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world import _django  # noqa: E402  (the same guard and django.setup())

# The filler: each other hospital has this many departments with a morning and an afternoon clinic
# every day over four weeks (two past, two coming), each of SLOTS_PER_SESSION numbers.
FILL_DEPARTMENTS = 10
FILL_DAYS = range(-14, 14)
SLOTS_PER_SESSION = 40
WINDOW_MINUTES = 5


def setup() -> dict:
    """One hospital as patients browse it: 内科 with two sub-departments, each with a department
    clinic and two doctors, morning and afternoon over the next week, 30 numbers a session."""
    from django.db import transaction

    from guahao import clock, testing
    from guahao.scheduling.models import Slot

    with transaction.atomic():
        hospital = testing.make_hospital(name="浏览压测医院")
        root = testing.make_department(hospital, name="内科")
        children = [testing.make_department(hospital, name=n, parent=root) for n in ("心血管内科", "消化内科")]
        sessions = []
        for department in (root, *children):
            doctors = [None, *(testing.make_doctor(department, name=n) for n in ("王医生", "李医生"))]
            for offset in range(7):
                day = clock.today() + dt.timedelta(days=offset)
                for doctor in doctors:
                    for start in (dt.time(8, 0), dt.time(13, 30)):
                        sessions.append(
                            testing.make_session(department, doctor=doctor, day=day, slots=30, per_window=3, start=start)
                        )
    tomorrow = [s for s in sessions if s.date == clock.today() + dt.timedelta(days=1)]
    return {
        "hospital_id": hospital.id,
        "department_id": root.id,
        "session_id": tomorrow[0].id,
        "sessions": len(sessions),
        "slots": Slot.objects.count(),
    }


def grow(total: int) -> dict:
    """Other hospitals' sessions and slots until the database holds about `total` slots (rounded up
    to whole sessions). Slots are generated inside the database (generate_series on PostgreSQL, a
    recursive CTE on SQLite), so a million take seconds rather than minutes."""
    from django.db import connection, transaction

    from guahao import clock, testing
    from guahao.catalog.models import Department, Hospital
    from guahao.scheduling.models import RegistrationType, Session, Slot

    started = time.perf_counter()
    need = total - Slot.objects.count()
    if need <= 0:
        return {"slots": Slot.objects.count(), "seconds": 0.0}
    sessions_needed = -(-need // SLOTS_PER_SESSION)
    today = clock.today()
    first_new = None
    with transaction.atomic():
        made = 0
        while made < sessions_needed:
            n = Hospital.objects.count() + 1  # testing.make_hospital counts codes per process: not unique here
            hospital = testing.make_hospital(code=f"R{n}", name=f"区域医院{n}")
            kind = RegistrationType.objects.get(hospital=hospital)
            departments = Department.objects.bulk_create(
                Department(hospital=hospital, level=1, code=f"F{i}", name=f"科室{i}") for i in range(FILL_DEPARTMENTS)
            )
            batch = []
            for department in departments:
                for offset in FILL_DAYS:
                    day = today + dt.timedelta(days=offset)
                    for start, period in ((dt.time(8, 0), Session.Period.MORNING), (dt.time(13, 30), Session.Period.AFTERNOON)):
                        if made + len(batch) >= sessions_needed:
                            break
                        starts_at = clock.at_local(day, start)
                        batch.append(Session(
                            hospital=hospital, department=department, registration_type=kind, date=day, period=period,
                            starts_at=starts_at,
                            ends_at=starts_at + dt.timedelta(minutes=WINDOW_MINUTES * SLOTS_PER_SESSION),
                            fee_fen=1000, capacity=SLOTS_PER_SESSION,
                        ))
            created = Session.objects.bulk_create(batch, batch_size=2000)
            if first_new is None and created:
                first_new = min(s.pk for s in created) if created[0].pk else None
            made += len(batch)
        if first_new is None:  # a backend that does not return primary keys from bulk_create
            first_new = Session.objects.order_by("-pk").values_list("pk", flat=True)[made - 1]
        _insert_slots(connection, first_new)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as a database that grew over months would have its statistics
    return {"slots": Slot.objects.count(), "sessions": Session.objects.count(), "seconds": time.perf_counter() - started}


def _insert_slots(connection, first_session_id: int) -> None:
    from guahao.scheduling.models import Session, Slot

    slot, session = Slot._meta.db_table, Session._meta.db_table
    columns = "session_id, seq, window_start, window_end, his_code, state, added_by"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {slot} ({columns}) "
                f"SELECT s.id, g, s.starts_at + (g - 1) * interval '{WINDOW_MINUTES} minutes', "
                f"s.starts_at + g * interval '{WINDOW_MINUTES} minutes', '', %s, '' "
                f"FROM {session} s CROSS JOIN generate_series(1, %s) g WHERE s.id >= %s",
                [Slot.State.FREE, SLOTS_PER_SESSION, first_session_id],
            )
        else:
            cursor.execute(
                f"WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < %s) "
                f"INSERT INTO {slot} ({columns}) "
                f"SELECT s.id, g.i, datetime(s.starts_at, '+' || ((g.i - 1) * {WINDOW_MINUTES}) || ' minutes'), "
                f"datetime(s.starts_at, '+' || (g.i * {WINDOW_MINUTES}) || ' minutes'), '', %s, '' "
                f"FROM {session} s, g WHERE s.id >= %s",
                [SLOTS_PER_SESSION, Slot.State.FREE, first_session_id],
            )


def time_availability(department_id: int, runs: int) -> dict:
    """What GET /api/v1/departments/{id}/availability?days=7 does, minus HTTP: load the department,
    run the selector, materialise the calendar. Milliseconds per call after three warm-up calls."""
    from django.db import connection, reset_queries

    from guahao import clock
    from guahao.catalog import selectors as catalog
    from guahao.scheduling import selectors
    from guahao.scheduling.models import Slot

    def once() -> int:
        department = catalog.get_department(department_id)
        calendar = selectors.availability(department=department, days=7, now=clock.now())
        return sum(len(d.sessions) for d in calendar)

    for _ in range(3):
        sessions = once()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        once()
        times.append((time.perf_counter() - started) * 1000)
    connection.force_debug_cursor = True
    reset_queries()
    once()
    queries = len(connection.queries)
    connection.force_debug_cursor = False
    times.sort()
    return {
        "slots": Slot.objects.count(),
        "sessions_shown": sessions,
        "queries": queries,
        "median_ms": statistics.median(times),
        "min_ms": times[0],
        "max_ms": times[-1],
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--out", type=Path, required=True)
    g = sub.add_parser("grow")
    g.add_argument("--total", type=int, required=True)
    g.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("time")
    t.add_argument("--department", type=int, required=True)
    t.add_argument("--runs", type=int, default=30)
    t.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    _django()
    if args.command == "setup":
        result = setup()
    elif args.command == "grow":
        result = grow(args.total)
    else:
        result = time_availability(args.department, args.runs)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
