"""Release-burst benchmark (放号瞬间): N signed-in clients POST /api/v1/holds at the same moment
against the real server (gunicorn, loopback only), then the database is checked for oversell.

Scenarios (DESIGN.md §4: one conditional UPDATE plus one INSERT per successful hold, losers
answered without a write):

  one-slot   every client asks for the same slot                 → 1 win, N-1 × 409
  window     every client asks for "the next free number" in one
             time window of 100 slots (a session of 200)         → 100 wins
  distinct   every client asks for its own random slot of a
             large session                                       → N wins

It builds its own database (a SQLite file in a temporary directory, or the PostgreSQL database
named in --database-url, whose name must contain "bench": it is created if missing and its schema
is dropped and migrated afresh), never the developer's var/guahao.sqlite3.

    .venv/bin/python bench/release_burst.py
    .venv/bin/python bench/release_burst.py --database-url postgresql://postgres@127.0.0.1:5432/guahao_bench

Exit status: 0 all invariants held, 1 an invariant was violated (oversell, a 5xx, a transport error,
an answer the database contradicts), 2 the run could not be completed (setup failed, --duration cap,
Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import secrets
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
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
WORLD = Path(__file__).resolve().parent / "world.py"
HOST = "127.0.0.1"
SCENARIOS = ("one-slot", "window", "distinct")
# The 409 codes a fair loser gets; any other 409 (a cap, not_released …) is the bench's fault.
LOSER_CODES = {"one-slot": "slot_taken", "window": "window_full", "distinct": "slot_taken"}


class Aborted(Exception):
    """The run cannot go on (setup failed, server died, the --duration cap was reached)."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise Aborted("the --duration cap was reached")
        return min(left, cap) if cap is not None else left


# --- the bench database and the server --------------------------------------------------------------


def bench_env(args: argparse.Namespace, workdir: Path, database_url: str, port: int) -> dict[str, str]:
    """The environment of every subprocess: only the bench's database, keys and directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUAHAO_") or k.startswith("GUAHAO_DB_POOL_")}
    env.update(
        GUAHAO_BENCH="1",
        GUAHAO_ENV="development",  # the sandbox provider and generated data: never production
        GUAHAO_DATABASE_URL=database_url,
        GUAHAO_VAR_DIR=str(workdir / "var"),
        GUAHAO_DATA_KEY=secrets.token_hex(16),
        GUAHAO_INDEX_KEY=secrets.token_hex(16),
        GUAHAO_BIND=f"{HOST}:{port}",
        GUAHAO_TRUSTED_PROXIES=HOST,  # the bench stands in for nginx: each client its own address
        GUAHAO_REDIS_URL=args.redis_url or "",
        GUAHAO_REDIS_PREFIX=f"guahao-bench-{secrets.token_hex(4)}:",
        GUAHAO_ALLOWED_HOSTS=f"{HOST},testserver",  # testserver: world.py's in-process profile
        GUAHAO_DEBUG="false",
        GUAHAO_LOG_LEVEL=args.server_log_level,
        DJANGO_SETTINGS_MODULE="guahao.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


def fresh_postgres(url: str, deadline: Deadline) -> str:
    """Create the bench database if missing, else drop its schema, so migrate starts from nothing."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if "bench" not in name:
        raise Aborted(f"refusing to reset database {name!r}: use a dedicated name such as guahao_bench")
    if parts.hostname not in (None, "", "127.0.0.1", "localhost", "::1"):
        print(f"note: database server {parts.hostname} is not on this machine", file=sys.stderr)
    admin = urlunsplit(parts._replace(path="/postgres"))
    timeout = max(1, int(deadline.left(30)))
    with psycopg.connect(admin, autocommit=True, connect_timeout=timeout) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return "created"
    with psycopg.connect(url, autocommit=True, connect_timeout=timeout) as conn:
        # A server left behind by a killed run may still hold connections: fail, do not hang.
        conn.execute("SET lock_timeout = '10s'")
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return "schema reset"


def manage(env: dict[str, str], deadline: Deadline, *argv: str, log: Path) -> None:
    with log.open("a") as out:
        done = subprocess.run(
            [sys.executable, "-m", "guahao.cli", *argv], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            timeout=deadline.left(), check=False,
        )
    if done.returncode != 0:
        raise Aborted(f"guahao {' '.join(argv)} failed (exit {done.returncode}); see the log below\n{tail(log)}")


def world(env: dict[str, str], deadline: Deadline, workdir: Path, *argv: str, log: Path) -> dict:
    out = workdir / f"world-{time.monotonic_ns()}.json"
    with log.open("a") as sink:
        done = subprocess.run(
            [sys.executable, str(WORLD), *argv, "--out", str(out)], cwd=ROOT, env=env, stdout=sink,
            stderr=subprocess.STDOUT, timeout=deadline.left(), check=False,
        )
    if done.returncode != 0:
        raise Aborted(f"bench/world.py {argv[0]} failed (exit {done.returncode})\n{tail(log)}")
    return json.loads(out.read_text())


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """gunicorn in a process group of its own: stopped by its id at the end, whatever happens."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        # Every client keeps one connection open (as nginx would towards its upstream), so each
        # worker must be allowed to keep them all alive for the length of a scenario.
        self.argv = [
            sys.executable, "-m", "gunicorn", "guahao.wsgi:application",
            "--bind", f"{HOST}:{port}", "--workers", str(args.workers), "--threads", str(args.threads),
            "--worker-connections", str(args.clients + args.threads + 100),
            "--keep-alive", str(int(args.timeout) + 60), "--graceful-timeout", "5",
            "--no-control-socket",  # gunicorn's default socket lives in the home directory: not ours
        ]
        with log.open("a") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_healthy(self, deadline: Deadline) -> dict:
        until = time.monotonic() + deadline.left(60)
        while time.monotonic() < until:
            if self.proc.poll() is not None:
                raise Aborted(f"gunicorn exited with {self.proc.returncode}\n{tail(self.log)}")
            conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    return json.loads(body)
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.2)
        raise Aborted(f"gunicorn did not answer /healthz in time\n{tail(self.log)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


# --- the load generator: asyncio, one keep-alive connection per client -------------------------------


@dataclass
class Answer:
    status: int | str  # an HTTP status, or "timeout" / "error:<kind>"
    seconds: float
    code: str = ""
    hold_id: int | None = None
    slot_id: int | None = None


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, raw: bytes) -> tuple[int, bytes, bool]:
        """Send one request, read one response: (status, body, server keeps the connection)."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunks.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(c[:-2] for c in chunks)
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, body, headers.get("connection", "").lower() != "close"

    def close(self) -> None:
        self.writer.close()


def client_address(i: int) -> str:
    """Client i's own address: each patient is on their own phone, behind the (trusted) proxy."""
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def request_bytes(
    method: str, path: str, *, token: str | None = None, body: dict | None = None, client: int | None = None
) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Connection: keep-alive", "Accept: application/json"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    if client is not None:
        # As nginx would add it: the server trusts it from 127.0.0.1 only (GUAHAO_TRUSTED_PROXIES).
        head.append(f"X-Forwarded-For: {client_address(client)}")
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def connect_all(port: int, count: int, *, timeout: float, parallel: int) -> list[Connection]:
    """Open every client's connection and warm it with GET /healthz, so the burst measures the
    application and not TCP handshakes or gunicorn's accept loop."""
    gate = asyncio.Semaphore(parallel)
    warm = request_bytes("GET", "/healthz")

    async def one() -> Connection:
        async with gate, asyncio.timeout(timeout):
            conn = Connection(*await asyncio.open_connection(HOST, port))
            status, _, keep = await conn.exchange(warm)
            if status != 200 or not keep:
                conn.close()
                raise Aborted(f"warm-up GET /healthz answered {status} (keep-alive {keep})")
            return conn

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    conns = [r for r in results if isinstance(r, Connection)]
    errors = [r for r in results if not isinstance(r, Connection)]
    if errors:
        for conn in conns:
            conn.close()
        raise Aborted(f"{len(errors)} of {count} connections failed to open: {errors[0]!r}")
    return conns


async def burst(
    port: int, requests: list[bytes], *, timeout: float, parallel: int, cap: float,
    sample: Callable[[], dict[str, dict[int, float]]],
) -> tuple[list[Answer], float, dict[str, float]]:
    """All clients send their request at the same moment. Returns the answers, the wall time from
    the release to the last answer, and the CPU seconds the load generator and the server used."""
    async with asyncio.timeout(cap):
        conns = await connect_all(port, len(requests), timeout=timeout, parallel=parallel)
        go = asyncio.Event()

        async def fire(conn: Connection, raw: bytes) -> Answer:
            await go.wait()
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    status, body, _ = await conn.exchange(raw)
            except TimeoutError:
                return Answer("timeout", time.perf_counter() - started)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                return Answer(f"error:{type(exc).__name__}", time.perf_counter() - started)
            seconds = time.perf_counter() - started
            try:
                data = json.loads(body)
            except ValueError:
                data = {}
            if status == 201:
                return Answer(status, seconds, hold_id=data.get("id"), slot_id=(data.get("slot") or {}).get("id"))
            return Answer(status, seconds, code=str(data.get("code", "")) if isinstance(data, dict) else "")

        try:
            tasks = [asyncio.create_task(fire(c, r)) for c, r in zip(conns, requests, strict=True)]
            await asyncio.sleep(0.2)  # every task is parked on the event
            before = sample()
            released = time.perf_counter()
            go.set()
            answers = await asyncio.gather(*tasks)
            wall = time.perf_counter() - released
            after = sample()
            # A process that started during the burst spent all its CPU in it (baseline 0).
            cpu = {
                name: sum(t - before.get(name, {}).get(pid, 0.0) for pid, t in per_pid.items())
                for name, per_pid in after.items()
            }
        finally:
            for conn in conns:
                conn.close()
    return answers, wall, cpu


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process so far (Linux /proc; missing ones are left out)."""
    seconds = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return seconds


class CpuSampler:
    """CPU seconds per process of the load generator, the server, and (on this machine) the
    PostgreSQL backends serving the bench database."""

    def __init__(self, server: Server, database_url: str | None) -> None:
        self.server_pids = [server.proc.pid, *children_of(server.proc.pid)]
        self.conn = None
        if database_url and urlsplit(database_url).hostname in ("127.0.0.1", "localhost", "::1"):
            import psycopg

            self.conn = psycopg.connect(database_url, autocommit=True, connect_timeout=5)

    def __call__(self) -> dict[str, dict[int, float]]:
        out = {"load generator": {os.getpid(): time.process_time()}, "server": cpu_seconds(self.server_pids)}
        if self.conn is not None:
            rows = self.conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            out["postgres"] = cpu_seconds([r[0] for r in rows])
        return out

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


# --- figures and checks ---------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * p // 100))  # nearest rank
    return sorted_values[int(rank) - 1]


@dataclass
class Outcome:
    scenario: str
    requests: int
    wins: int
    losses: int
    other: dict[str, int]
    loser_codes: dict[str, int]
    wall: float
    latencies: list[float]
    win_latencies: list[float]
    loss_latencies: list[float]
    expected_wins: int
    cpu: dict[str, float] = field(default_factory=dict)
    db: dict = field(default_factory=dict)
    pg: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.wall if self.wall else float("nan")

    def ms(self, p: float, values: list[float] | None = None) -> float:
        return percentile(sorted(self.latencies if values is None else values), p) * 1000


def summarise(scenario: str, answers: list[Answer], wall: float, expected_wins: int) -> Outcome:
    wins = [a for a in answers if a.status == 201]
    losses = [a for a in answers if a.status == 409]
    other: dict[str, int] = {}
    for a in answers:
        if a.status not in (201, 409):
            key = str(a.status) + (f" {a.code}" if a.code else "")
            other[key] = other.get(key, 0) + 1
    codes: dict[str, int] = {}
    for a in losses:
        codes[a.code] = codes.get(a.code, 0) + 1
    return Outcome(
        scenario=scenario, requests=len(answers), wins=len(wins), losses=len(losses), other=other,
        loser_codes=codes, wall=wall, latencies=[a.seconds for a in answers],
        win_latencies=[a.seconds for a in wins], loss_latencies=[a.seconds for a in losses],
        expected_wins=expected_wins,
    )


def check(outcome: Outcome, answers: list[Answer], db: dict) -> list[str]:
    """Every way the answers and the database could disagree with "at most one live hold per slot,
    and a win for every claimed slot"."""
    failures = []
    fives = sum(n for k, n in outcome.other.items() if k[:1] == "5")
    if fives:
        failures.append(f"{fives} answers were 5xx")
    broken = sum(n for k, n in outcome.other.items() if not k[:1].isdigit())
    if broken:
        failures.append(f"{broken} requests timed out or lost their connection")
    if outcome.other and not fives and not broken:
        failures.append(f"unexpected statuses {outcome.other}")
    wrong = {c: n for c, n in outcome.loser_codes.items() if c != LOSER_CODES[outcome.scenario]}
    if wrong:
        failures.append(f"409s for reasons other than a taken slot: {wrong}")
    if db["oversold_slots"]:
        failures.append(f"OVERSOLD: slots with more than one live hold {db['oversold_slots'][:10]}")
    won_slots = [a.slot_id for a in answers if a.status == 201]
    if len(set(won_slots)) != len(won_slots):
        failures.append("OVERSOLD: two winners were answered with the same slot")
    if not (outcome.wins == db["live_holds"] == db["live_hold_slots"] == db["held_slots"]):
        failures.append(
            f"wins {outcome.wins} ≠ live holds {db['live_holds']} / slots with a live hold "
            f"{db['live_hold_slots']} / held slots {db['held_slots']}"
        )
    if db["held_without_live_hold"]:
        failures.append(f"{db['held_without_live_hold']} slots are held with no live hold")
    if db["outside_target"]:
        failures.append(f"{db['outside_target']} holds landed outside the slots asked for")
    if db["winners_not_in_db"]:
        failures.append(f"answered wins missing from the database: {db['winners_not_in_db']}")
    if db["booked_slots"]:
        failures.append(f"{db['booked_slots']} slots became booked without payment")
    if outcome.wins < outcome.expected_wins and not fives and not broken:
        failures.append(f"UNDERSOLD: {outcome.wins} wins, {outcome.expected_wins} were possible")
    return failures


# A backend that flushed its statistics less than a second ago defers the next flush until it has
# been idle for 10 s (PostgreSQL's PGSTAT_IDLE_INTERVAL): read the counters only after that.
PG_STATS_DELAY = 11.0


def pg_counters(url: str | None) -> dict | None:
    """Rolled-back transactions and rows written in the bench database so far (PostgreSQL only).
    Commits are left out: this very query commits, and every autocommit read counts as one."""
    if url is None:
        return None
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT xact_rollback, tup_inserted, tup_updated, tup_deleted"
            " FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return dict(zip(("rollbacks", "rows inserted", "rows updated", "rows deleted"), row, strict=True))


def fmt_ms(value: float) -> str:
    return f"{value:.0f}"


def report(outcome: Outcome, label: str) -> None:
    o = outcome
    print(f"\n== {o.scenario}: {label}")
    print(
        f"   requests {o.requests}  wins {o.wins}  losses(409) {o.losses}  other {sum(o.other.values())}"
        + (f" {o.other}" if o.other else "")
    )
    print(
        f"   wall {o.wall:.2f} s  {o.rps:.0f} requests/s  latency p50 {fmt_ms(o.ms(50))} ms  "
        f"p95 {fmt_ms(o.ms(95))} ms  p99 {fmt_ms(o.ms(99))} ms"
    )
    parts = []
    if o.win_latencies:
        parts.append(f"wins p50 {fmt_ms(o.ms(50, o.win_latencies))} ms")
    if o.loss_latencies:
        parts.append(f"losses p50 {fmt_ms(o.ms(50, o.loss_latencies))} ms")
    if o.loser_codes:
        parts.append("409 codes " + ", ".join(f"{c}={n}" for c, n in sorted(o.loser_codes.items())))
    print("   " + "  ".join(parts))
    if o.cpu and o.wall:
        cores = os.cpu_count() or 1
        used = ", ".join(f"{k} {v:.1f} s ({v / o.wall / cores:.0%})" for k, v in o.cpu.items())
        rest = 1 - sum(o.cpu.values()) / o.wall / cores
        print(
            f"   cpu during the burst, of {cores} cores × {o.wall:.1f} s: {used}; "
            f"rest {rest:.0%} (other processes, idle)"
        )
    d = o.db
    print(
        f"   db: live holds {d['live_holds']} on {d['live_hold_slots']} slots, held slots {d['held_slots']}, "
        f"oversold slots {len(d['oversold_slots'])}, expected wins {o.expected_wins}"
    )
    if o.pg:
        per = max(o.requests, 1)
        wins = max(o.wins, 1)
        print(
            "   pg: " + ", ".join(f"{k} {v}" for k, v in o.pg.items())
            + f"; per request: rollbacks {o.pg['rollbacks'] / per:.2f}; per win: rows inserted "
            f"{o.pg['rows inserted'] / wins:.2f}, rows updated {o.pg['rows updated'] / wins:.2f}"
        )
    print("   check: " + ("OK" if not o.failures else "FAILED\n     - " + "\n     - ".join(o.failures)))


def table(outcomes: list[Outcome]) -> str:
    rows = [
        "| scenario | requests | wins | 409 | other | wall s | req/s | p50 ms | p95 ms | p99 ms | check |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for o in outcomes:
        rows.append(
            f"| {o.scenario} | {o.requests} | {o.wins} | {o.losses} | {sum(o.other.values())} | {o.wall:.2f} | "
            f"{o.rps:.0f} | {fmt_ms(o.ms(50))} | {fmt_ms(o.ms(95))} | {fmt_ms(o.ms(99))} | "
            f"{'ok' if not o.failures else 'FAILED'} |"
        )
    return "\n".join(rows)


# --- the run --------------------------------------------------------------------------------------


def plan(scenario: str, spec: dict, tokens: list[str]) -> tuple[list[bytes], list[int], int, str]:
    """Each client's request, the slots it may land on, the wins possible, and a label."""
    s = spec[scenario]
    n = len(tokens)
    if scenario == "one-slot":
        bodies = [{"slot_id": s["slot_id"]}] * n
        return (
            [request_bytes("POST", "/api/v1/holds", token=t, body=b, client=c) for c, (t, b) in enumerate(zip(tokens, bodies, strict=True))],
            [s["slot_id"]], min(n, 1), f"{n} clients, one slot (session of {s['session_slots']})",
        )
    if scenario == "window":
        body = {"session_id": s["session_id"], "window_start": s["window_start"]}
        return (
            [request_bytes("POST", "/api/v1/holds", token=t, body=body, client=c) for c, t in enumerate(tokens)],
            s["window_slot_ids"], min(n, len(s["window_slot_ids"])),
            f"{n} clients, next free in a window of {len(s['window_slot_ids'])} (session of {s['session_slots']})",
        )
    return (
        [request_bytes("POST", "/api/v1/holds", token=t, body={"slot_id": i}, client=c) for c, (t, i) in enumerate(zip(tokens, s["slot_ids"], strict=True))],
        s["slot_ids"], n, f"{n} clients, each its own random slot (session of {s['session_slots']})",
    )


def run(args: argparse.Namespace, deadline: Deadline, workdir: Path) -> list[Outcome]:
    log = workdir / "bench.log"
    port = free_port()
    if args.database_url:
        database_url = args.database_url
        print(f"database: PostgreSQL {urlsplit(database_url).path.lstrip('/')} ({fresh_postgres(database_url, deadline)})")
    else:
        database_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
        print("database: SQLite file in a temporary directory")
    env = bench_env(args, workdir, database_url, port)

    started = time.monotonic()
    manage(env, deadline, "migrate", "--noinput", "-v", "0", log=log)
    spec = world(
        env, deadline, workdir, "setup", "--clients", str(args.clients),
        "--large-slots", str(max(2 * args.clients, 1000)), "--seed", str(args.seed), log=log,
    )
    print(f"setup: migrate + 1 hospital, 3 sessions, {args.clients} accounts with tokens in {time.monotonic() - started:.1f} s")
    print("SQL statements per POST /api/v1/holds (one request alone, auth to response):")
    for name, p in spec["profile"].items():
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(p["kinds"].items()))
        print(f"   {name:16} {p['status']}  {p['statements']:2} statements: {kinds}")

    server = Server(args, env, port, workdir / "server.log")
    outcomes = []
    sampler = None
    try:
        health = server.wait_healthy(deadline)
        print(
            f"server: gunicorn --workers {args.workers} --threads {args.threads} on {HOST}:{port} "
            f"(database {health.get('database')}), load generator: asyncio, one keep-alive connection per client"
        )
        tokens = spec["tokens"]
        sampler = CpuSampler(server, args.database_url)
        for scenario in args.scenarios:
            requests, targets, expected, label = plan(scenario, spec, tokens)
            pg_before = pg_counters(args.database_url)
            try:
                answers, wall, cpu = asyncio.run(burst(
                    port, requests, timeout=args.timeout, parallel=args.connect_parallel, cap=deadline.left(),
                    sample=sampler,
                ))
            except TimeoutError as exc:
                raise Aborted("the --duration cap was reached during a burst") from exc
            burst_ended = time.monotonic()
            outcome = summarise(scenario, answers, wall, expected)
            outcome.cpu = cpu
            winners = [[a.hold_id, a.slot_id] for a in answers if a.status == 201]
            spec_path = workdir / f"verify-{scenario}.json"
            spec_path.write_text(json.dumps(
                {"session_id": spec[scenario]["session_id"], "target_slot_ids": targets, "winners": winners}
            ))
            outcome.db = world(env, deadline, workdir, "verify", "--spec", str(spec_path), log=log)
            outcome.failures = check(outcome, answers, outcome.db)
            if args.database_url:
                time.sleep(max(0.0, min(burst_ended + PG_STATS_DELAY - time.monotonic(), deadline.left())))
                pg_after = pg_counters(args.database_url)
                outcome.pg = {k: pg_after[k] - pg_before[k] for k in pg_before}
            report(outcome, label)
            outcomes.append(outcome)
            if server.proc.poll() is not None:
                raise Aborted(f"gunicorn exited during the run\n{tail(server.log)}")
    finally:
        if sampler is not None:
            sampler.close()
        server.stop()
    return outcomes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2000, help="signed-in clients, one request each per scenario (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    parser.add_argument("--database-url", help="postgresql://… of a dedicated bench database (default: SQLite in a temp dir)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, from {', '.join(SCENARIOS)}")
    parser.add_argument("--duration", type=float, default=600, help="stop the whole run after this many seconds (default 600)")
    parser.add_argument("--timeout", type=float, default=60, help="per-request timeout in seconds (default 60)")
    parser.add_argument("--connect-parallel", type=int, default=100, help="connections opened at once before a burst")
    parser.add_argument("--server-log-level", default="INFO", help="GUAHAO_LOG_LEVEL of the server (default INFO, as deployed)")
    parser.add_argument("--redis-url", help="redis://127.0.0.1:6379/0 to count rate limits in Redis (default: the database)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, logs)")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown or not args.scenarios:
        parser.error(f"unknown scenario {unknown}; choose from {', '.join(SCENARIOS)}")
    if args.clients < 1 or args.workers < 1 or args.threads < 1:
        parser.error("--clients, --workers and --threads must be at least 1")
    if args.database_url and not args.database_url.startswith(("postgresql://", "postgres://")):
        parser.error("--database-url must be postgresql://… (leave it out for SQLite)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = Deadline(args.duration)

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="guahao-bench-"))
    failed = True
    try:
        print(
            f"release burst: {args.clients} clients, gunicorn {args.workers}×{args.threads}, "
            f"scenarios {', '.join(args.scenarios)}; {os.cpu_count()} CPUs shared by server, database and load generator"
        )
        with contextlib.suppress(OSError):
            print("load average before the run: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
        outcomes = run(args, deadline, workdir)
        print("\n" + table(outcomes))
        failed = any(o.failures for o in outcomes)
        print("\nresult: " + ("INVARIANT VIOLATED" if failed else "all invariants held"))
        return 1 if failed else 0
    except Aborted as exc:
        print(f"\naborted: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 2
    except subprocess.TimeoutExpired:
        print("\naborted: the --duration cap was reached", file=sys.stderr)
        return 2
    finally:
        if args.keep or failed:
            print(f"logs and database kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
