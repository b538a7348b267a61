"""What bench/release_burst.py and bench/browse.py share: the bench database and environment, the
server in a process group of its own, CPU sampling from /proc, wrk runs and their figures, and the
exit handling (0 all held, 1 something was wrong, 2 the run could not be completed)."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "lua"
HOST = "127.0.0.1"


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


def bench_env(
    *, workdir: Path, database_url: str, port: int, redis_url: str | None = None, log_level: str = "INFO"
) -> dict[str, str]:
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
        GUAHAO_REDIS_URL=redis_url or "",
        GUAHAO_REDIS_PREFIX=f"guahao-bench-{secrets.token_hex(4)}:",
        GUAHAO_ALLOWED_HOSTS=f"{HOST},testserver",  # testserver: the world scripts' in-process client
        GUAHAO_DEBUG="false",
        GUAHAO_LOG_LEVEL=log_level,
        DJANGO_SETTINGS_MODULE="guahao.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


def bench_database(database_url: str | None, workdir: Path, deadline: Deadline) -> str:
    """The URL the run uses: the named PostgreSQL database reset, or a SQLite file in `workdir`."""
    if database_url:
        print(f"database: PostgreSQL {urlsplit(database_url).path.lstrip('/')} ({fresh_postgres(database_url, deadline)})")
        return database_url
    print("database: SQLite file in a temporary directory")
    return f"sqlite:///{workdir / 'bench.sqlite3'}"


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


def json_tool(script: Path, env: dict[str, str], deadline: Deadline, workdir: Path, *argv: str, log: Path) -> dict:
    """Run a bench world script (`setup`, `verify`, …) in a Django process of its own; its answer
    is the JSON it writes to --out."""
    out = workdir / f"{script.stem}-{time.monotonic_ns()}.json"
    with log.open("a") as sink:
        done = subprocess.run(
            [sys.executable, str(script), *argv, "--out", str(out)], cwd=ROOT, env=env, stdout=sink,
            stderr=subprocess.STDOUT, timeout=deadline.left(), check=False,
        )
    if done.returncode != 0:
        raise Aborted(f"bench/{script.name} {argv[0]} failed (exit {done.returncode})\n{tail(log)}")
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


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both benchmarks share: the load generator, the server, the database."""
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=16, help="threads per worker (default 16, as guahao run; GUAHAO_ADMISSION_ACTIVE of them execute at once)")
    parser.add_argument("--database-url", help="postgresql://… of a dedicated bench database (default: SQLite in a temp dir)")


class ProcessGroup:
    """A child started with `start_new_session=True` (`self.proc`, its output in `self.log`):
    checked for life, and stopped with its whole group whatever happens."""

    what = "a child process"
    grace = 10.0  # seconds between SIGTERM and SIGKILL
    proc: subprocess.Popen
    log: Path

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise Aborted(f"{self.what} exited with {self.proc.returncode}\n{tail(self.log)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        # Children left behind by a leader that died first (gunicorn's workers): the group is ours alone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class Server(ProcessGroup):
    """gunicorn as `guahao run` starts it (gthread workers), in a process group of its own: stopped
    by its id at the end, whatever happens."""

    what = "gunicorn"
    grace = 15.0

    def __init__(
        self, env: dict[str, str], port: int, log: Path, *, workers: int, threads: int, connections: int,
        keep_alive: int = 120,
    ) -> None:
        self.port = port
        self.log = log
        # Every wrk connection stays open for a whole run (as nginx's towards its upstream), so
        # each worker must be allowed to keep them all alive.
        self.argv = [
            sys.executable, "-m", "gunicorn", "guahao.wsgi:application",
            "--bind", f"{HOST}:{port}", "--workers", str(workers), "--threads", str(threads),
            "--worker-connections", str(connections + threads + 100),
            "--keep-alive", str(keep_alive), "--graceful-timeout", "5",
            "--no-control-socket",  # gunicorn's default socket lives in the home directory: not ours
        ]
        with log.open("a") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_healthy(self, deadline: Deadline) -> dict:
        until = time.monotonic() + deadline.left(60)
        while time.monotonic() < until:
            self.check_alive()
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



class HisSimulator(ProcessGroup):
    """The project's HIS simulator (`python -m guahao.his.simulator`, empty: the bench makes its
    sessions through the control API) on a loopback port, in a process group of its own: stopped by
    its id at the end, whatever happens. The shared secret goes by environment, not on argv."""

    what = "the HIS simulator"

    def __init__(self, env: dict[str, str], port: int, log: Path, *, hospital: str, secret: str) -> None:
        self.url = f"http://{HOST}:{port}"
        self.hospital, self.secret, self.log = hospital, secret, log
        argv = [
            sys.executable, "-m", "guahao.his.simulator", "--bind", f"{HOST}:{port}", "--hospital", hospital,
            "--seed", "empty",
        ]
        with log.open("a") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env={**env, "GUAHAO_HIS_SIMULATOR_SECRET": secret}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def control(self, method: str, path: str, document: dict | None = None, *, timeout: float = 10.0) -> dict:
        """/_control/<path> (unsigned, loopback only); Aborted on anything but a 2xx JSON answer."""
        conn = http.client.HTTPConnection(HOST, int(self.url.rsplit(":", 1)[1]), timeout=timeout)
        try:
            body = json.dumps(document or {}) if method == "POST" else None
            conn.request(method, f"/_control/{path}", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        if not 200 <= response.status < 300:
            raise Aborted(f"HIS simulator /_control/{path}: {response.status} {payload[:300]!r}")
        return json.loads(payload)

    def wait_answering(self, deadline: Deadline, *, timeout: float = 20.0) -> None:
        until = time.monotonic() + deadline.left(timeout)
        while time.monotonic() < until:
            self.check_alive()
            try:
                self.control("GET", "state", timeout=2)
                return
            except (OSError, Aborted, ValueError):
                time.sleep(0.1)
        raise Aborted(f"the HIS simulator did not answer in {timeout:.0f} s\n{tail(self.log)}")

    def answer_after(self, latency_ms: int) -> None:
        """Every call of the contract answered after `latency_ms` (the simulator's latency fault,
        until cleared), each call waiting on its own: the HIS is slow, not busy."""
        if latency_ms > 0:
            self.control("POST", "faults", {"operation": "*", "fault": "latency", "times": -1, "latency_ms": latency_ms})

    def cpu_seconds(self) -> float:
        return cpu_seconds([self.proc.pid]).get(self.proc.pid, 0.0)



# --- CPU from /proc -------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process so far (Linux /proc; missing ones are left out)."""
    seconds = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return seconds


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


class CpuSampler:
    """CPU seconds per process of the server (gunicorn's master and workers) and, when the database
    is on this machine, the PostgreSQL backends serving the bench database."""

    def __init__(self, server: Server, database_url: str | None) -> None:
        self.server_pids = [server.proc.pid, *children_of(server.proc.pid)]
        self.conn = None
        if database_url and urlsplit(database_url).hostname in ("127.0.0.1", "localhost", "::1"):
            import psycopg

            self.conn = psycopg.connect(database_url, autocommit=True, connect_timeout=5)

    def __call__(self) -> dict[str, dict[int, float]]:
        out = {"server": cpu_seconds(self.server_pids)}
        if self.conn is not None:
            rows = self.conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            out["postgres"] = cpu_seconds([r[0] for r in rows])
        return out

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def cpu_spent(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds per group between two samples; a process that started in between spent all of
    its CPU in it (baseline 0)."""
    return {
        name: sum(t - before.get(name, {}).get(pid, 0.0) for pid, t in per_pid.items())
        for name, per_pid in after.items()
    }


def wait_idle(sampler: CpuSampler, *, cap: float = 30.0, step: float = 0.5, below: float = 0.05) -> float:
    """Wait until the server and database have nearly stopped working (wrk leaves requests in flight
    when it stops, and the server still finishes them): less than `below` of a core over `step`."""
    started = time.monotonic()
    last = sampler()
    while time.monotonic() - started < cap:
        time.sleep(step)
        now = sampler()
        if sum(cpu_spent(last, now).values()) < below * step:
            break
        last = now
    return time.monotonic() - started


# --- wrk ------------------------------------------------------------------------------------------

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * UNITS[unit]


def parse_wrk_text(output: str) -> dict:
    """Figures from wrk --latency's own report (no Lua script)."""
    requests = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    if requests is None:
        raise Aborted(f"could not read wrk's report:\n{output}")
    percentiles = {p: _ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", output, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests": int(requests.group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": percentiles.get("50"),
        "p99_ms": percentiles.get("99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


def parse_wrk_lua(output: str) -> dict:
    """Figures from the "BENCH_WRK {json}" line that bench/lua/common.lua's done() prints."""
    line = next((x for x in output.splitlines() if x.startswith("BENCH_WRK ")), None)
    if line is None:
        raise Aborted(f"wrk's script printed no figures:\n{output}")
    raw = json.loads(line.removeprefix("BENCH_WRK "))
    lat, errors = raw["latency_us"], raw["errors"]
    statuses = {int(k): v for k, v in sorted(raw["statuses"].items(), key=lambda kv: int(kv[0]))}
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "seconds": seconds,
        "rps": raw["requests"] / seconds if seconds else 0.0,
        "p50_ms": lat["p50"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "p999_ms": lat["p999"] / 1000,
        "max_ms": lat["max"] / 1000,
        "statuses": statuses,
        "refusals": raw.get("refusals", {}),
        "non_2xx": sum(n for code, n in statuses.items() if not 200 <= code < 400),
        "socket_errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        "timeouts": errors["timeout"],
        "sent": raw["sent"],
        "repeats": raw["repeats"],
    }


def lua_script(workdir: Path, name: str) -> Path:
    """bench/lua/common.lua followed by bench/lua/<name>.lua, as one file for wrk -s."""
    path = workdir / f"wrk-{name}.lua"
    if not path.exists():
        path.write_text((LUA / "common.lua").read_text() + "\n" + (LUA / f"{name}.lua").read_text())
    return path


def run_wrk(
    url: str, *, seconds: float, connections: int, threads: int, sampler: CpuSampler, script: Path | None = None,
    script_args: tuple[str, ...] = (), timeout: int = 10,
) -> dict:
    """One wrk run, with the server's (and database's) CPU over it: cpu_ms_per_req counts both."""
    threads = max(1, min(threads, connections))
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", f"{timeout}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script), url, "--", str(threads), *script_args]
    else:
        argv.append(url)
    before, children_before = sampler(), resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise Aborted(f"wrk did not finish: {' '.join(argv)}") from exc
    after, children_after = sampler(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise Aborted(f"wrk failed (exit {done.returncode}): {done.stderr or done.stdout}")
    figures = parse_wrk_lua(done.stdout) if script is not None else parse_wrk_text(done.stdout)
    if figures["p99_ms"] is None or figures["requests"] == 0:
        raise Aborted(f"no latency distribution in wrk's report (no answer at all?):\n{done.stdout}")
    cpu = cpu_spent(before, after)
    figures["cpu_ms_per_req"] = sum(cpu.values()) * 1000 / max(1, figures["requests"])
    figures["cpu_server_s"] = cpu.get("server", 0.0)
    figures["cpu_db_s"] = cpu.get("postgres", 0.0)
    figures["cpu_wrk_s"] = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    return figures


def need_wrk(script: str) -> bool:
    if shutil.which("wrk") is None:
        print(f"{script} needs wrk, the HTTP load generator: apt-get install -y wrk (or make bench-deps)", file=sys.stderr)
        return False
    return True


# --- exit handling --------------------------------------------------------------------------------


def guarded(run: Callable[[Deadline, Path], int], *, duration: float, prefix: str, keep: bool) -> int:
    """Run `run(deadline, workdir)` in a temporary directory: its exit status (0 or 1), or 2 when the
    run could not be completed (Aborted, the --duration cap, Ctrl-C, SIGTERM). The directory is
    kept when asked or when the run did not end in 0."""
    deadline = Deadline(duration)

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    status = 2
    try:
        with contextlib.suppress(OSError):
            print("load average before the run: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
        status = run(deadline, workdir)
        return status
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
        if keep or status != 0:
            print(f"logs and database kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
