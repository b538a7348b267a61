"""`guahao backup FILE`: a consistent copy of the database while the service runs.

SQLite: the sqlite3 online backup API (pages copied under the database's own locking, so a
concurrent writer never leaves a torn copy); FILE is itself a database. PostgreSQL: `pg_dump -Fc`
(one snapshot), restored with `pg_restore` (docs/operations.md, "Backup and restore drill").
Personal data stays encrypted in the copy: keep the keys apart from it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection


class Command(BaseCommand):
    help = "Copy the database to FILE while the service runs (SQLite file, or pg_dump -Fc)"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="where the copy goes; must not exist yet")

    def handle(self, *args: object, file: Path, **options: object) -> None:
        if file.exists():
            raise CommandError(f"{file} already exists: a backup never overwrites a file")
        if connection.vendor == "sqlite":
            self._sqlite(file)
        elif connection.vendor == "postgresql":
            self._postgresql(file)
        else:
            raise CommandError(f"no backup for {connection.vendor}")
        self.stdout.write(f"backup: {file} ({file.stat().st_size} bytes)")

    def _sqlite(self, file: Path) -> None:
        connection.ensure_connection()
        target = sqlite3.connect(file)
        try:
            with target:
                connection.connection.backup(target)
        finally:
            target.close()

    def _postgresql(self, file: Path) -> None:
        db = connection.settings_dict
        env = os.environ | {
            "PGHOST": db["HOST"] or "", "PGPORT": str(db["PORT"] or ""), "PGUSER": db["USER"] or "",
            "PGPASSWORD": db["PASSWORD"] or "", "PGDATABASE": db["NAME"],
        }  # fmt: skip
        done = subprocess.run(  # noqa: S603 (fixed arguments, no shell)
            ["pg_dump", "--format=custom", "--no-owner", f"--file={file}"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode:
            file.unlink(missing_ok=True)
            raise CommandError(f"pg_dump failed: {done.stderr.strip()}")
