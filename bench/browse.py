"""Browse benchmark: what patients do before the release, under load, against the real server.

Targets, each driven by wrk (64 connections, 2 threads) for --seconds:

  b_json        GET /bench/json, the trivial JSON view (same server, settings and middleware)
  availability  GET /api/v1/departments/{id}/availability?days=7
  slots         GET /api/v1/sessions/{id}/slots
  search        GET /api/v1/hospitals/{id}/search?q=内科
  h5_schedule   GET /departments/{id}, the H5 department page with its schedule

For each: requests/s, p99 latency, and the server's CPU milliseconds per request (gunicorn and, on
PostgreSQL on this machine, the bench database's backends, from /proc/<pid>/stat), which is steadier
than requests/s on a machine the load generator shares. Then the availability selector is timed in a
Django process on a database of 10,000 slots and of 1,000,000 (other hospitals' sessions).

    .venv/bin/python bench/browse.py --quick
    .venv/bin/python bench/browse.py --database-url postgresql://postgres@127.0.0.1:5432/guahao_bench

The last line printed is one JSON object with the figures. Needs wrk (`make bench-deps`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402  (the bench database, environment, server, CPU sampling and wrk)

BROWSE_WORLD = Path(__file__).resolve().parent / "browse_world.py"
SMALL_SLOTS = 10_000
BIG_SLOTS = 1_000_000
QUICK_SQLITE_BIG_SLOTS = 200_000
TARGETS = ("b_json", "availability", "slots", "search", "h5_schedule")


def world(env: dict[str, str], deadline: h.Deadline, workdir: Path, *argv: str, log: Path) -> dict:
    return h.json_tool(BROWSE_WORLD, env, deadline, workdir, *argv, log=log)


def run_wrk(url: str, *, seconds: int, connections: int, threads: int, sampler: h.CpuSampler, script: Path) -> dict:
    """wrk with answers counted by status: a 429 of admission control is load shed by design,
    reported as `shed` and left out of req/s, which counts answered (2xx) requests only."""
    figures = h.run_wrk(url, seconds=seconds, connections=connections, threads=threads, sampler=sampler, script=script)
    statuses = figures["statuses"]
    answered = sum(n for code, n in statuses.items() if 200 <= code < 400)
    figures["shed"] = statuses.get(429, 0)
    figures["non_2xx"] -= figures["shed"]
    figures["rps"] = answered / figures["seconds"] if figures["seconds"] else 0.0
    figures["cpu_ms_per_req"] = figures["cpu_ms_per_req"] * figures["requests"] / max(1, answered)
    return figures


# --- the run --------------------------------------------------------------------------------------


def run(args: argparse.Namespace, deadline: h.Deadline, workdir: Path) -> dict:
    log = workdir / "bench.log"
    port = h.free_port()
    database_url = h.bench_database(args.database_url, workdir, deadline)
    env = h.bench_env(workdir=workdir, database_url=database_url, port=port, log_level=args.server_log_level)
    env["GUAHAO_BENCH_BASELINE"] = "1"
    # wrk is one address; behind nginx each patient has their own, which never meets browse_ip.
    env["GUAHAO_LIMIT_BROWSE_IP"] = "off"

    started = time.monotonic()
    h.manage(env, deadline, "migrate", "--noinput", "-v", "0", log=log)
    h.manage(env, deadline, "collectstatic", "--noinput", "-v", "0", log=log)  # the H5 pages need the manifest
    spec = world(env, deadline, workdir, "setup", log=log)
    small = world(env, deadline, workdir, "grow", "--total", str(SMALL_SLOTS), log=log)
    print(
        f"setup: 1 hospital browsed ({spec['sessions']} sessions, {spec['slots']} slots) + other hospitals, "
        f"{small['slots']} slots in all, in {time.monotonic() - started:.1f} s"
    )

    base = f"http://{h.HOST}:{port}"
    urls = {
        "b_json": f"{base}/bench/json",
        "availability": f"{base}/api/v1/departments/{spec['department_id']}/availability?days=7",
        "slots": f"{base}/api/v1/sessions/{spec['session_id']}/slots",
        "search": f"{base}/api/v1/hospitals/{spec['hospital_id']}/search?q={quote('内科')}",
        "h5_schedule": f"{base}/departments/{spec['department_id']}",
    }
    server = h.Server(
        env, port, workdir / "server.log", workers=args.workers, threads=args.threads, connections=args.connections,
        keep_alive=90,
    )
    sampler = None
    load: dict[str, dict] = {}
    try:
        health = server.wait_healthy(deadline)
        print(
            f"server: gunicorn --workers {args.workers} --threads {args.threads} (database {health.get('database')}); "
            f"load: wrk -t{args.wrk_threads} -c{args.connections} -d{args.seconds}s per target"
        )
        sampler = h.CpuSampler(server, args.database_url)
        get = h.lua_script(workdir, "get")
        for name in TARGETS:
            # A short warm-up: every worker thread has its connection and imports before measuring.
            run_wrk(urls[name], seconds=2, connections=args.connections, threads=args.wrk_threads, sampler=sampler, script=get)
            load[name] = run_wrk(
                urls[name], seconds=args.seconds, connections=args.connections, threads=args.wrk_threads,
                sampler=sampler, script=get,
            )
            f = load[name]
            print(
                f"   {name:13} {f['rps']:8.1f} req/s  p99 {f['p99_ms']:7.1f} ms  server CPU {f['cpu_ms_per_req']:6.2f} ms/req"
                f"  429 {f['shed']}  other non-2xx {f['non_2xx']}  socket errors {f['socket_errors']}"
            )
            deadline.left()
            if server.proc.poll() is not None:
                raise h.Aborted(f"gunicorn exited during the run\n{h.tail(server.log)}")
    finally:
        if sampler is not None:
            sampler.close()
        server.stop()

    timings = {}
    timings["small"] = world(env, deadline, workdir, "time", "--department", str(spec["department_id"]), "--runs", str(args.runs), log=log)
    big_target = args.big_slots or (QUICK_SQLITE_BIG_SLOTS if args.quick and not args.database_url else BIG_SLOTS)
    grown = world(env, deadline, workdir, "grow", "--total", str(big_target), log=log)
    print(f"grew the database to {grown['slots']} slots in {grown['seconds']:.1f} s")
    timings["big"] = world(env, deadline, workdir, "time", "--department", str(spec["department_id"]), "--runs", str(args.runs), log=log)
    for key, t in timings.items():
        print(
            f"   availability selector, {t['slots']:>9} slots: median {t['median_ms']:.2f} ms "
            f"(min {t['min_ms']:.2f}, max {t['max_ms']:.2f}, {t['runs']} runs, {t['queries']} queries, "
            f"{t['sessions_shown']} sessions shown) [{key}]"
        )
    return {"load": load, "timings": timings, "database": "postgresql" if args.database_url else "sqlite"}


def table(load: dict[str, dict]) -> str:
    baseline = load["b_json"]
    rows = [
        f"{'target':13} {'req/s':>9} {'vs B_json':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>10} {'429':>6} {'non-2xx':>8}",
    ]
    for name, f in load.items():
        rows.append(
            f"{name:13} {f['rps']:9.1f} {f['rps'] / baseline['rps']:9.3f} {f['p50_ms']:8.1f} {f['p99_ms']:8.1f} "
            f"{f['cpu_ms_per_req']:10.2f} {f['shed']:6} {f['non_2xx']:8}"
        )
    return "\n".join(rows)


def summary(result: dict, args: argparse.Namespace) -> dict:
    load, timings = result["load"], result["timings"]
    b = load["b_json"]["rps"]
    out: dict = {
        "database": result["database"],
        "seconds_per_target": args.seconds,
        "connections": args.connections,
        "b_json_rps": round(b, 1),
    }
    for name in TARGETS[1:]:
        out[f"{name}_rps"] = round(load[name]["rps"], 1)
        out[f"{name}_vs_json"] = round(load[name]["rps"] / b, 4)
    for name in TARGETS:
        out[f"{name}_p99_ms"] = load[name]["p99_ms"]
        out[f"{name}_cpu_ms_per_req"] = round(load[name]["cpu_ms_per_req"], 3)
    out["errors"] = sum(f["non_2xx"] + f["socket_errors"] for f in load.values())
    out["shed_429"] = {name: load[name]["shed"] for name in TARGETS}
    out["avail_10k_ms"] = round(timings["small"]["median_ms"], 3)
    out["avail_10k_slots"] = timings["small"]["slots"]
    out["avail_big_slots"] = timings["big"]["slots"]
    out["avail_big_ms"] = round(timings["big"]["median_ms"], 3)
    # avail_1m_ms only when the big database really holds a million slots (SQLite --quick: smaller).
    out["avail_1m_ms"] = out["avail_big_ms"] if timings["big"]["slots"] >= BIG_SLOTS else None
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s per target (and 200,000 slots on SQLite): under 3 minutes")
    parser.add_argument("--seconds", type=int, help="wrk duration per target (default 30, 10 with --quick)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    h.add_server_arguments(parser)
    parser.add_argument("--big-slots", type=int, help="slots in the big database (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=30, help="timed calls of the availability selector per size")
    parser.add_argument("--duration", type=float, default=1200, help="stop the whole run after this many seconds")
    parser.add_argument("--server-log-level", default="INFO", help="GUAHAO_LOG_LEVEL of the server (default INFO, as deployed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, logs)")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (10 if args.quick else 30)
    if args.database_url is None and os.environ.get("GUAHAO_DATABASE_URL", "").startswith(("postgresql://", "postgres://")):
        args.database_url = os.environ["GUAHAO_DATABASE_URL"]
    if args.database_url and not args.database_url.startswith(("postgresql://", "postgres://")):
        parser.error("--database-url must be postgresql://… (leave it out for SQLite)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not h.need_wrk("bench/browse.py"):
        return 2

    def body(deadline: h.Deadline, workdir: Path) -> int:
        print(f"browse: {os.cpu_count()} CPUs shared by server, database and load generator (wrk)")
        result = run(args, deadline, workdir)
        print("\n" + table(result["load"]))
        figures = summary(result, args)
        failed = figures["errors"] > 0
        if failed:
            print("\nsome requests failed (non-2xx or socket errors): see the table", file=sys.stderr)
        print(json.dumps(figures, ensure_ascii=False))
        return 1 if failed else 0

    return h.guarded(body, duration=args.duration, prefix="guahao-browse-", keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
