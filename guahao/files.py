"""Files that hold personal data or keys (the SQLite database, var/*.key): owner-only (0600) from the
moment they exist, whatever the process's umask."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PRIVATE = 0o600


def create_private(path: Path) -> bool:
    """Create `path` empty and owner-only unless it exists; True when this call created it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE)  # os.open's mode passes through the umask; this does not
    finally:
        os.close(fd)
    return True


def write_private_once(path: Path, text: str) -> None:
    """Write `path` owner-only with `text`, unless it exists. Readers never see it half written:
    it is written under a temporary name and linked into place, and the first of two racing
    writers wins."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    try:
        os.fchmod(fd, PRIVATE)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)


def _sqlite_path(settings_dict: dict) -> str | None:
    if not settings_dict["ENGINE"].endswith("sqlite3"):
        return None
    name = str(settings_dict.get("NAME") or "")
    return None if not name or name.startswith((":memory:", "file:")) else name


def create_sqlite_database(settings_dict: dict) -> None:
    """Create the SQLite database file owner-only before anything opens it; SQLite gives its -wal
    and -shm files the mode of the database file."""
    path = _sqlite_path(settings_dict)
    if path and Path(path).parent.is_dir():  # a missing folder is SQLite's to report, on connect
        create_private(Path(path))


def restrict_sqlite_files(sender: object, connection: object, **kwargs: object) -> None:
    """connection_created receiver: a SQLite database made before this rule, or by the test runner,
    and its -wal and -shm files become owner-only too."""
    name = _sqlite_path(connection.settings_dict)
    if not name:
        return
    for path in (name, f"{name}-wal", f"{name}-shm"):
        try:
            if os.stat(path).st_mode & 0o777 != PRIVATE:
                os.chmod(path, PRIVATE)
        except FileNotFoundError:
            continue
