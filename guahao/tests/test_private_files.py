"""Files with personal data (the SQLite database with its -wal and -shm files) and the generated
development keys are owner-only (0600) from the start, whatever the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from guahao.files import PRIVATE, create_private, restrict_sqlite_files, write_private_once

ROOT = Path(__file__).resolve().parents[2]

REPORT_MODES = """
import json, os
from django.db import connection
from guahao import pii
connection.ensure_connection()
pii.encrypt("张三")
var = os.environ["GUAHAO_VAR_DIR"]
print(json.dumps({f: os.stat(os.path.join(var, f)).st_mode & 0o777 for f in os.listdir(var)}))
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_var_dir_gets_owner_only_database_and_key_files(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUAHAO_", "DJANGO_"))}
    env.update(GUAHAO_ENV="development", GUAHAO_VAR_DIR=str(tmp_path))

    def guahao(*args: str) -> subprocess.CompletedProcess:
        # umask 0: a file made the ordinary way would be world-readable (0644 or even 0666)
        return subprocess.run(
            [sys.executable, "-m", "guahao.cli", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
            preexec_fn=lambda: os.umask(0),
        )

    guahao("migrate", "--noinput")
    assert mode(tmp_path / "guahao.sqlite3") == 0o600
    # While a connection is open the -wal and -shm files exist; the keys are made on first use.
    modes = json.loads(guahao("shell", "-c", REPORT_MODES).stdout.strip().splitlines()[-1])
    for name in ("guahao.sqlite3", "guahao.sqlite3-wal", "guahao.sqlite3-shm", "data.key", "index.key"):
        assert modes[name] == 0o600, (name, oct(modes[name]))


def test_create_private_leaves_an_existing_file_alone(tmp_path):
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"data")
    assert create_private(path) is False
    assert path.read_bytes() == b"data"


def test_a_key_file_is_written_once_and_never_replaced(tmp_path):
    path = tmp_path / "data.key"
    old = os.umask(0)
    try:
        write_private_once(path, "first")
        write_private_once(path, "second")
    finally:
        os.umask(old)
    assert path.read_text() == "first"
    assert mode(path) == PRIVATE
    assert os.listdir(tmp_path) == ["data.key"]  # no temporary file left behind


class _Connection:
    vendor = "sqlite"

    def __init__(self, name: Path):
        self.settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(name)}


def test_a_database_made_before_the_rule_becomes_owner_only_on_connect(tmp_path):
    db = tmp_path / "guahao.sqlite3"
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.write_bytes(b"")
        path.chmod(0o644)
    restrict_sqlite_files(sender=None, connection=_Connection(db))
    assert {mode(p) for p in tmp_path.iterdir()} == {PRIVATE}
