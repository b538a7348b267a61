"""The backup and restore drill (docs/operations.md): a database with bookings, payments and a
refund is copied with `guahao backup` while open, restored into a fresh database, and the restored
copy passes `guahao ledger-check` with every table's row count as in the original."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection

from guahao.booking.models import Registration
from guahao.booking.services import cancel_registration
from guahao.booking.tests.conftest import ready_to_book, registered
from guahao.payments.models import Payment, Refund
from guahao.testing import (
    make_account,
    make_department,
    make_doctor,
    make_hospital,
    make_session,
    run_worker,
)

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


def populate() -> None:
    """Two paid registrations, one of them cancelled and refunded."""
    hospital = make_hospital()
    department = make_department(hospital, name="皮肤科")
    session = make_session(department, doctor=make_doctor(department, name="周医生"), slots=3)
    first, second = make_account(), make_account()
    kept = registered(first, ready_to_book(first, hospital, name="林一"), session, seq=1)
    refunded = registered(second, ready_to_book(second, hospital, name="林二"), session, seq=2)
    cancel_registration(account=second, registration_id=refunded.id)
    run_worker()
    assert Registration.objects.get(pk=kept.pk).status == "booked"
    assert Payment.objects.count() == 2 and Refund.objects.filter(state="succeeded").count() == 1


def table_counts(count: Callable[[str], int]) -> dict[str, int]:
    tables = {m._meta.db_table for m in apps.get_models() if m._meta.managed and not m._meta.proxy}
    return {table: count(table) for table in sorted(tables)}


def original_count(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")
        return cursor.fetchone()[0]


def ledger_check(database_url: str) -> subprocess.CompletedProcess:
    env = os.environ | {"GUAHAO_DATABASE_URL": database_url, "GUAHAO_ENV": "development"}
    return subprocess.run(  # noqa: S603 (our own command)
        [sys.executable, "-m", "guahao.cli", "ledger-check"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def restored_pg() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for the restore, dropped afterwards."""
    name = f"guahao_restore_h3_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.django_db(transaction=True)
def test_a_sqlite_backup_restores_to_a_database_that_passes_ledger_check(tmp_path: Path):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite drill")
    populate()
    backup = tmp_path / "backup.sqlite3"

    call_command("backup", str(backup), stdout=io.StringIO())
    # Restore: the backup API again, from the copy into the database file the service will open.
    restored = tmp_path / "restored.sqlite3"
    with sqlite3.connect(backup) as source, sqlite3.connect(restored) as target:
        source.backup(target)

    check = ledger_check(f"sqlite:///{restored}")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ledger-check: 0 violations" in check.stdout
    copy = sqlite3.connect(restored)
    try:
        copied = table_counts(lambda t: copy.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0])
    finally:
        copy.close()
    assert copied == table_counts(original_count)
    assert copied["booking_registration"] == 2 and copied["payments_refund"] == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_a_pg_dump_restores_with_pg_restore_to_a_database_that_passes_ledger_check(
    tmp_path: Path, restored_pg: str
):
    populate()
    dump = tmp_path / "guahao.dump"

    call_command("backup", str(dump), stdout=io.StringIO())
    restore = subprocess.run(
        ["pg_restore", "--no-owner", "-h", "127.0.0.1", "-U", "postgres", "-d", restored_pg,
         str(dump)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr

    check = ledger_check(f"{PG_SERVER}/{restored_pg}")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ledger-check: 0 violations" in check.stdout
    with psycopg.connect(f"{PG_SERVER}/{restored_pg}") as copy:
        copied = table_counts(lambda t: copy.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0])
    assert copied == table_counts(original_count)
    assert copied["booking_registration"] == 2 and copied["payments_refund"] == 1
