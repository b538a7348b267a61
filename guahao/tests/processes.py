"""Real guahao processes for the crash tests: the web server (gunicorn, started as `guahao run`
starts it), the worker (which also runs the scheduler while it holds the lease), the payment
sandbox, and a private PostgreSQL cluster that a test may stop and start without touching anyone
else's database. Each process runs in its own process group, so a crash (SIGKILL) takes all of its
children with it, as the machine would."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check: Callable[[], T], *, timeout: float, every: float = 0.1, what: str = "") -> T:
    """`check()`'s first truthy answer; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if result := check():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        time.sleep(every)


def answers(url: str) -> bool:
    """`url` answers 200 now."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Service:
    """One long-running command; `crash()` is kill -9 of its whole process group."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_url: str = ""  # answers 200 once the service is up
    process: subprocess.Popen | None = field(default=None, repr=False)
    starts: int = 0

    def start(self, *, wait: bool = True) -> Service:
        assert not self.alive, f"{self.name} is already running"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                start_new_session=True,
            )
        self.starts += 1
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        if self.ready_url:
            wait_for(
                lambda: self._exited_early() or answers(self.ready_url), timeout=timeout, what=f"{self.name} up"
            )

    def _exited_early(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
        return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def crash(self) -> None:
        """SIGKILL to the process and every child of it: no handler, no clean-up runs."""
        if self.alive:
            self._signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if not self.alive:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._signal_group(signal.SIGKILL)  # children that outlived their parent

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)


def guahao_env(*, database_url: str, web_port: int, sandbox_port: int, **extra: str) -> dict[str, str]:
    """The environment of every process of one site: development mode, one database, the web
    server's own address as the public URL (where the sandbox posts its notifications)."""
    env = dict(os.environ)
    env.update(
        GUAHAO_ENV="development",
        DJANGO_SETTINGS_MODULE="guahao.settings",
        GUAHAO_DATABASE_URL=database_url,
        GUAHAO_BIND=f"127.0.0.1:{web_port}",
        GUAHAO_PUBLIC_URL=f"http://127.0.0.1:{web_port}",
        GUAHAO_PAY_SANDBOX_URL=f"http://127.0.0.1:{sandbox_port}",
        GUAHAO_MESSAGE_CHANNELS="log",
        GUAHAO_SCHEDULER_JOBS="",
        # One address sends every simulated patient's requests.
        GUAHAO_LIMIT_HOLD_IP="off",
        GUAHAO_LIMIT_HOLD_ACCOUNT="off",
        GUAHAO_LIMIT_BROWSE_IP="off",
    )
    for test_only in ("PROMETHEUS_MULTIPROC_DIR", "GUAHAO_DB_POOL_TIMEOUT"):
        env.pop(test_only, None)
    env.update(extra)
    return env


@dataclass
class Site:
    """The web server, the worker and the payment sandbox of one database."""

    web: Service
    worker: Service
    sandbox: Service
    base_url: str

    def start(self) -> Site:
        self.sandbox.start(wait=False)
        self.web.start(wait=False)
        self.worker.start(wait=False)
        self.sandbox.wait_ready()
        self.web.wait_ready()
        return self

    def stop(self) -> None:
        """SIGKILL to all: the tests have asserted what they wanted by then."""
        for service in (self.web, self.worker, self.sandbox):
            service.crash()


def site(*, database_url: str, logs: Path, keys: Path, **extra: str) -> Site:
    """A site as `guahao run` starts it (gunicorn with run's flags, one web process), with the
    payment sandbox delivering its notifications to it. Not started yet."""
    from guahao.management.commands import run

    web_port, sandbox_port = free_port(), free_port()
    env = guahao_env(database_url=database_url, web_port=web_port, sandbox_port=sandbox_port, **extra)
    python = sys.executable
    base_url = f"http://127.0.0.1:{web_port}"
    web = Service(
        "web",
        [python, "-m", "gunicorn", "guahao.wsgi:application", "-c", "python:guahao.gunicorn_conf",
         "--bind", f"127.0.0.1:{web_port}", "--workers", "1", "--threads", run.WEB_THREADS,
         "--keep-alive", run.KEEP_ALIVE, "--graceful-timeout", "2"],
        env, logs / "web.log", ready_url=f"{base_url}/healthz",
    )
    worker = Service("worker", [python, "-m", "guahao.cli", "worker"], env, logs / "worker.log")
    sandbox = Service(
        "sandbox",
        [python, "-m", "guahao.payments.sandbox", "--port", str(sandbox_port), "--keys", str(keys),
         "--state", str(logs / "pay-sandbox-state.json")],
        env, logs / "sandbox.log", ready_url=f"http://127.0.0.1:{sandbox_port}/",
    )
    return Site(web=web, worker=worker, sandbox=sandbox, base_url=base_url)


def guahao_command(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`guahao <args>` as an operator types it, against `env`'s database."""
    return subprocess.run(
        [sys.executable, "-m", "guahao.cli", *args], env=env, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=timeout,
    )


# --- a private PostgreSQL cluster -------------------------------------------------------------


def _postgres_bin() -> Path | None:
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


class PrivateCluster:
    """A throw-away PostgreSQL server on a free loopback port, run as the `postgres` user, that
    one test may stop and start as it likes (fsync off: it only has to survive clean stops)."""

    def __init__(self) -> None:
        # Its own directory under the system's temporary one: pytest's tmp_path is private to root,
        # and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="guahao-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.bin = _postgres_bin()

    @classmethod
    def unavailable(cls) -> str:
        """Why no private cluster can run here ("" when it can)."""
        if _postgres_bin() is None:
            return "PostgreSQL server binaries (initdb) are not installed"
        if shutil.which("pg_dump") is None or shutil.which("psql") is None:
            return "the PostgreSQL client programs (pg_dump, psql) are not installed"
        if os.geteuid() != 0 or shutil.which("runuser") is None:
            return "starting a private PostgreSQL cluster needs root (runuser -u postgres)"
        return ""

    def _as_postgres(self, *argv: str, timeout: float = 60) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], check=True, timeout=timeout,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def init(self) -> PrivateCluster:
        assert self.bin is not None
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        )
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=60"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-w", "-o", options, "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def copy_database(self, source_url: str, database: str) -> None:
        """A copy of `source_url`'s schema and rows (pg_dump into psql): faster than migrating."""
        subprocess.run(
            ["psql", "-q", "-d", self.url("postgres"), "-c", f'CREATE DATABASE "{database}"'],
            check=True, timeout=30, stdout=subprocess.DEVNULL,
        )
        dump = subprocess.run(
            ["pg_dump", "--no-owner", "--no-privileges", "-d", source_url],
            check=True, timeout=60, capture_output=True,
        )
        subprocess.run(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url(database)],
            input=dump.stdout, check=True, timeout=60, stdout=subprocess.DEVNULL,
        )
