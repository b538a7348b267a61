"""Release-burst benchmark (放号瞬间): POST /api/v1/holds under wrk against the real server
(gunicorn, loopback only), each figure beside its baselines from the same run, and the database
checked for oversell and undersell after every load.

Loads (wrk with bench/lua/holds.lua: each patient its own bearer token, its own X-Forwarded-For):

  b_json    GET /bench/json, the trivial JSON view on the same server (B_json)
  hold      winning holds: every patient walks through its own list of free slots, so every
            request is a real win (a pool that runs out shows as 409s, counted as bench errors)
  soldout   losers: every patient asks for the one slot already taken
  b_sql     pgbench running a win's own statements (the conditional UPDATE of the slot, the hold
            INSERT, the outbox INSERT) on the same database (PostgreSQL only)
  sweep     winning holds at several connection counts (--sweep): throughput and the longest wait
  bursts    --bursts N short bursts of a random scenario (one-slot, window, distinct), patients
            and seed; after each the database must show no oversell and every slot asked for held,
            and, once the locks have lapsed, every one of them free and claimable again

The hospital's HIS is the project's HIS simulator (python -m guahao.his.simulator, HIS 锁号), started
on a free loopback port for the run and answering every call after --his-latency-ms (default 20 ms):
each winning hold waits on its HIS lock as it would in a hospital. The sessions are made in the
simulator and synced in by guahao's own schedule sync. --no-his runs the hospital on the local pool
(no HIS call on the hold path), as before.

It builds its own database (a SQLite file in a temporary directory, or the PostgreSQL database
named in --database-url, whose name must contain "bench": created if missing, its schema dropped
and migrated afresh), never the developer's var/guahao.sqlite3. The last line printed is one JSON
object with the figures. Needs wrk (and pgbench for B_sql): `make bench-deps`.

    .venv/bin/python bench/release_burst.py --quick
    .venv/bin/python bench/release_burst.py --database-url postgresql://postgres@127.0.0.1:5432/guahao_bench

Exit status: 0 all invariants held, 1 one was violated (oversell, undersell, a 5xx, a transport
error, a pool that ran out), 2 the run could not be completed (setup failed, --duration cap, Ctrl-C).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402  (the bench database, environment, server, CPU sampling and wrk)

WORLD = Path(__file__).resolve().parent / "world.py"
SCENARIOS = ("one-slot", "window", "distinct")
# Each patient may hold as often as the load asks: the per-account and per-address hold limits
# are still counted on every request (in Redis on PostgreSQL runs), they just never refuse.
LOOSE_LIMIT = "1000000/10m,1000000/d"
HIS_HOSPITAL = "BENCH"  # the hospital code the simulator serves (X-His-Hospital)


def client_address(i: int) -> str:
    """Patient i's own address: each patient is on their own phone, behind the (trusted) proxy."""
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


@dataclass
class Load:
    """One wrk run of holds: its figures, what it asked for and what the database said after."""

    name: str
    figures: dict
    asked: list[int] = field(default_factory=list)
    db: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def wins(self) -> int:
        return self.figures["statuses"].get(201, 0)


class Plan:
    """The per-patient plan files holds.lua reads: "token address body body …" per line."""

    def __init__(self, workdir: Path, tokens: list[str]) -> None:
        self.workdir, self.tokens = workdir, tokens

    def write(self, name: str, bodies: list[list[str]]) -> Path:
        if len(bodies) > len(self.tokens):
            raise h.Aborted(f"{name}: {len(bodies)} patients but only {len(self.tokens)} tokens")
        path = self.workdir / f"plan-{name}.txt"
        with path.open("w") as out:
            for i, own in enumerate(bodies):
                out.write(f"{self.tokens[i]} {client_address(i)} {' '.join(own)}\n")
        return path


def his_label(args: argparse.Namespace) -> str:
    return f"simulator, {args.his_latency_ms} ms per call" if args.his == "simulator" else "the local pool"


def slot_body(slot_id: int) -> str:
    return json.dumps({"slot_id": slot_id}, separators=(",", ":"))


def asked_slots(lists: list[list[int]], sent: list[int], threads: int) -> list[int]:
    """The slots holds.lua asked for, from how many requests each thread sent: thread k's patients
    are lines k, k+threads, … and take its requests in turn, each walking through its own list."""
    asked = []
    for k, count in enumerate(sent):
        mine = lists[k::threads]
        for p, own in enumerate(mine):
            turns = max(0, -(-(count - p) // len(mine)))
            asked.extend(own[: min(turns, len(own))])
    return asked


# --- the runs -------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, deadline: h.Deadline, workdir: Path) -> None:
        self.args, self.deadline, self.workdir = args, deadline, workdir
        self.log = workdir / "bench.log"
        self.port = h.free_port()
        self.base = f"http://{h.HOST}:{self.port}"
        self.pool_cursor = 0
        self.his: h.HisSimulator | None = None

    def world(self, *argv: str) -> dict:
        return h.json_tool(WORLD, self.env, self.deadline, self.workdir, *argv, log=self.log)

    def verify(self, spec: dict) -> dict:
        path = self.workdir / f"verify-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(spec))
        return self.world("verify", "--spec", str(path))

    def wrk_holds(self, name: str, plan: Path, *, seconds: float, connections: int) -> dict:
        self.deadline.left(seconds + 30)
        his_before = self.his.cpu_seconds() if self.his else 0.0
        # A long timeout: under overload the longest wait is measured, not cut off at wrk's default 2 s.
        figures = h.run_wrk(
            self.base + "/api/v1/holds", seconds=seconds, connections=connections, threads=self.args.wrk_threads,
            sampler=self.sampler, script=h.lua_script(self.workdir, "holds"), script_args=(str(plan),), timeout=30,
        )
        # wrk stops with requests in flight; the server still finishes them before the database is read.
        h.wait_idle(self.sampler, cap=min(30.0, self.deadline.left()))
        self.server.check_alive()
        if self.his:
            self.his.check_alive()
            # The HIS's CPU is the hospital's, not guahao's: reported beside, never in cpu_ms_per_req.
            figures["cpu_his_s"] = self.his.cpu_seconds() - his_before
        return answered(figures)

    def take_pool(self, count: int) -> list[int]:
        ids = self.pool[self.pool_cursor : self.pool_cursor + count]
        self.pool_cursor += len(ids)
        return ids

    def winning_holds(self, name: str, *, seconds: float, connections: int, share: int) -> Load:
        """Every patient walks through its own slots of the pool: each request a real win."""
        ids = self.take_pool(share)
        per = len(ids) // connections
        if per < 1:
            raise h.Aborted(f"{name}: the pool has {len(ids)} slots left for {connections} patients: raise --pool")
        lists = [ids[i * per : (i + 1) * per] for i in range(connections)]
        plan = self.plan.write(name, [[slot_body(s) for s in own] for own in lists])
        figures = self.wrk_holds(name, plan, seconds=seconds, connections=connections)
        threads = min(self.args.wrk_threads, connections)
        load = Load(name, figures, asked=asked_slots(lists, figures["sent"], threads))
        if figures["repeats"]:
            load.failures.append(f"the pool ran out: {figures['repeats']} requests asked for a slot already won (raise --pool)")
        return load

    def check_statuses(self, load: Load, allowed: set[int], *, repeats_answered_409: bool = False) -> None:
        """`repeats_answered_409`: under overload the 429s use up a patient's list of slots, and a
        patient at the end of theirs asks again for the one they won: those 409s are expected."""
        f = load.figures
        fives = sum(n for code, n in f["statuses"].items() if code >= 500)
        if fives:
            load.failures.append(f"{fives} answers were 5xx")
        statuses = dict(f["statuses"])
        if repeats_answered_409 and 409 in statuses:
            statuses[409] = max(0, statuses[409] - f["repeats"])
            if not statuses[409]:
                del statuses[409]
        odd = {code: n for code, n in statuses.items() if code < 500 and code not in allowed and code != 429}
        if odd:
            load.failures.append(f"unexpected statuses {odd}")
        # A timeout is a wait (reported); a broken connection is an answer the patient never got.
        if f["socket_errors"] - f["timeouts"]:
            load.failures.append(f"{f['socket_errors'] - f['timeouts']} connections broke (connect, read or write errors)")

    def b_json(self) -> dict:
        script = h.lua_script(self.workdir, "get")
        h.run_wrk(self.base + "/bench/json", seconds=1, connections=self.args.connections,
                  threads=self.args.wrk_threads, sampler=self.sampler, script=script)
        return answered(h.run_wrk(self.base + "/bench/json", seconds=self.args.seconds, connections=self.args.connections,
                                  threads=self.args.wrk_threads, sampler=self.sampler, script=script))

    def take_soldout_slot(self) -> None:
        conn = http.client.HTTPConnection(h.HOST, self.port, timeout=30)
        try:
            conn.request("POST", "/api/v1/holds", body=slot_body(self.spec["soldout"]["slot_id"]), headers={
                "Authorization": f"Bearer {self.tokens[0]}", "Content-Type": "application/json",
                "X-Forwarded-For": client_address(0),
            })
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 201:
            raise h.Aborted(f"could not take the slot to sell out: {response.status} {body[:300]!r}")

    def soldout(self) -> Load:
        self.take_soldout_slot()
        n = self.args.connections
        plan = self.plan.write("soldout", [[slot_body(self.spec["soldout"]["slot_id"])]] * n)
        load = Load("soldout", self.wrk_holds("soldout", plan, seconds=self.args.seconds, connections=n))
        load.asked = [self.spec["soldout"]["slot_id"]]
        load.db = self.verify({"session_ids": [self.spec["soldout"]["session_id"]], "asked_slot_ids": load.asked,
                               "answered_wins": load.wins + 1})
        self.check_statuses(load, {409})
        return load

    def burst(self, i: int, burst: dict, hold_rps: float) -> Load:
        """All patients at once, for long enough that each has been answered at least once at the
        measured hold rate; patients answered 409 (or 429) ask again, as people do."""
        c, scenario = burst["connections"], burst["scenario"]
        targets = burst["slot_ids"]
        if scenario == "one-slot":
            lists = [[targets[0]]] * c
            bodies = [[slot_body(targets[0])]] * c
        elif scenario == "window":
            window = json.dumps({"session_id": burst["session_id"], "window_start": burst["window_start"]}, separators=(",", ":"))
            lists, bodies = [[]] * c, [[window]] * c
        else:
            lists = [[s] for s in targets[:c]]
            bodies = [[slot_body(s)] for s in targets[:c]]
        seconds = min(15.0, max(2.0, 2 + 1.5 * c / max(hold_rps, 50.0)))
        name = f"burst{i + 1}-{scenario}-{c}"
        figures = self.wrk_holds(name, self.plan.write(name, bodies), seconds=seconds, connections=c)
        load = Load(name, figures)
        sent = sum(figures["sent"])
        if scenario == "distinct":
            load.asked = asked_slots(lists, figures["sent"], min(self.args.wrk_threads, c))
            expected = len(load.asked)
        else:
            load.asked = targets
            expected = min(len(targets), sent)
        load.db = self.verify({
            "session_ids": [burst["session_id"]], "asked_slot_ids": load.asked, "answered_wins": load.wins,
            "expire": True, "claim_sample": 2,
        })
        load.db["expected_wins"] = expected
        short = max(0, expected - load.db["live_hold_slots"])
        if scenario == "distinct":
            # A patient whose every try was shed (429) or still in flight when wrk stopped did not
            # get their own slot, which stays free: not an undersell. In one-slot and window
            # bursts any request that reached the claim while a number was free must have won.
            short = max(0, short - figures["statuses"].get(429, 0) - max(0, sent - figures["requests"]))
        load.db["unsold"] = short + load.db["unsold_after_expiry"]
        self.check_statuses(load, {201, 409})
        return load

    def pgbench(self) -> dict | None:
        """B_sql: a win's own statements, nothing else, for as long as each wrk target ran."""
        if not self.args.database_url:
            return None
        if shutil.which("pgbench") is None:
            raise h.Aborted("pgbench is missing: apt-get install -y postgresql-client (or make bench-deps)")
        p = self.spec["pgbench"]
        clients = self.args.pgbench_clients
        script = self.workdir / "b_sql.sql"
        # Each client walks its own slots (lo + client_id, then + clients each time): every UPDATE
        # finds its row free, as a win's does; a pool that runs out ends in a foreign-key error.
        script.write_text(
            "\\set n :n + 1\n"
            f"\\set slot {p['lo']} + (:n - 1) * {clients} + :client_id\n"
            f"\\set session {p['first_session_id']} + (:slot - {p['lo']}) / {p['session_slots']}\n"
            "BEGIN;\n"
            "UPDATE scheduling_slot SET state = 'held', held_until = now() + interval '10 minutes'"
            " WHERE id = :slot AND (state = 'free' OR (state = 'held' AND held_until <= now()))"
            " AND window_start > now();\n"
            "INSERT INTO booking_hold (account_id, slot_id, session_id, state, expires_at, his_lock_id, channel,"
            " insurance, fee_fen, created_at, updated_at)"
            f" VALUES ({int(p['account_id'])}, :slot, :session, 'held', now() + interval '10 minutes', '', '', false,"
            f" {int(p['fee_fen'])}, now(), now()) RETURNING id AS hold_id \\gset\n"
            "INSERT INTO notifications_outboxevent (topic, payload, created_at, available_at, attempts, claim_token,"
            " last_error) VALUES ('hold.created', json_build_object('hold_id', :hold_id), now(), now(), 0, '', '');\n"
            "COMMIT;\n"
        )
        url = urlsplit(self.args.database_url)
        env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
        argv = [
            "pgbench", "-n", "-f", str(script), "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 1)),
            "-T", str(int(self.args.seconds)), "-D", "n=0", "-h", url.hostname or h.HOST, "-p", str(url.port or 5432),
            "-U", url.username or "postgres", url.path.lstrip("/"),
        ]
        if url.password:
            env["PGPASSWORD"] = url.password
        # pgbench's backends come and go with it: sample them while it runs, keep each one's last figure.
        seen: dict[int, float] = {}
        before = self.sampler().get("postgres", {})
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
            until = time.monotonic() + self.args.seconds + 60
            while proc.poll() is None:
                if time.monotonic() > until:
                    proc.kill()
                    raise h.Aborted("pgbench did not finish")
                seen.update(self.sampler().get("postgres", {}))
                time.sleep(0.25)
            stdout, stderr = proc.communicate(timeout=10)
        done = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
        cpu = {"postgres": sum(t - before.get(pid, 0.0) for pid, t in seen.items())}
        tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
        processed = re.search(r"number of transactions actually processed: (\d+)", done.stdout)
        failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
        if done.returncode != 0 or tps is None or processed is None:
            raise h.Aborted(f"pgbench failed (exit {done.returncode}): {done.stderr[-2000:] or done.stdout[-2000:]}")
        count = int(processed.group(1))
        # pgbench's own backends are new connections: CPU of every backend of the bench database.
        return {
            "tps": float(tps.group(1)), "transactions": count, "failed": int(failed.group(1)) if failed else 0,
            "cpu_db_ms_per_tx": cpu.get("postgres", 0.0) * 1000 / max(1, count),
        }

    def run(self) -> dict:
        """The whole run, with the HIS simulator (when used) started first and stopped last."""
        if self.args.his == "simulator":
            self.his = h.HisSimulator(
                {k: v for k, v in os.environ.items() if not k.startswith("GUAHAO_")}, h.free_port(),
                self.workdir / "his.log", hospital=HIS_HOSPITAL, secret=secrets.token_hex(16),
            )
        try:
            if self.his:
                self.his.wait_answering(self.deadline)
                self.his.answer_after(self.args.his_latency_ms)
            return self.run_loads()
        finally:
            if self.his:
                self.his.stop()

    def run_loads(self) -> dict:
        args = self.args
        database_url = h.bench_database(args.database_url, self.workdir, self.deadline)
        redis_url = None if args.no_redis else (args.redis_url or ("redis://127.0.0.1:6379/0" if args.database_url else None))
        self.env = h.bench_env(
            workdir=self.workdir, database_url=database_url, port=self.port, redis_url=redis_url,
            log_level=args.server_log_level,
        )
        self.env.update(
            GUAHAO_BENCH_BASELINE="1", GUAHAO_LIMIT_HOLD_ACCOUNT=LOOSE_LIMIT, GUAHAO_LIMIT_HOLD_IP=LOOSE_LIMIT,
        )
        rng = random.Random(args.seed)
        bursts = [
            {"scenario": rng.choice(SCENARIOS), "connections": rng.randint(50, args.burst_max_connections),
             "seed": rng.randrange(1 << 30)}
            for _ in range(args.bursts)
        ]
        accounts = max([args.connections, *args.sweep, *(b["connections"] for b in bursts)])
        started = time.monotonic()
        h.manage(self.env, self.deadline, "migrate", "--noinput", "-v", "0", log=self.log)
        bursts_path = self.workdir / "bursts.json"
        bursts_path.write_text(json.dumps(bursts))
        tokens_path = self.workdir / "tokens.txt"
        his_argv = ("--his-url", self.his.url, "--his-hospital", self.his.hospital) if self.his else ()
        setup_env = {**self.env, "GUAHAO_BENCH_HIS_SECRET": self.his.secret} if self.his else self.env
        self.spec = h.json_tool(
            WORLD, setup_env, self.deadline, self.workdir, "setup", "--accounts", str(accounts), "--pool", str(args.pool),
            "--pgbench-pool", str(args.pgbench_pool if args.database_url else 0),
            "--bursts", str(bursts_path), "--tokens", str(tokens_path), *his_argv, log=self.log,
        )
        self.tokens = tokens_path.read_text().split()
        self.pool = self.spec["pool_slot_ids"]
        self.plan = Plan(self.workdir, self.tokens)
        print(
            f"setup: migrate + {accounts} accounts with tokens, a pool of {len(self.pool)} free slots, "
            f"{len(bursts)} burst sessions, pgbench pool {args.pgbench_pool if args.database_url else 0}"
            f"{', sessions made in the HIS simulator and synced' if self.his else ''} in {time.monotonic() - started:.1f} s"
        )
        print("SQL statements per POST /api/v1/holds (one request alone, auth to response):")
        for name, p in self.spec["profile"].items():
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(p["kinds"].items()))
            print(f"   {name:16} {p['status']}  {p['statements']:2} statements: {kinds}")

        most = max([args.connections, *args.sweep, *(b["connections"] for b in bursts)])
        self.server = h.Server(
            self.env, self.port, self.workdir / "server.log", workers=args.workers, threads=args.threads,
            connections=most, keep_alive=120,
        )
        self.sampler = None
        result: dict = {"bursts": [], "sweep": {}}
        try:
            health = self.server.wait_healthy(self.deadline)
            self.sampler = h.CpuSampler(self.server, args.database_url)
            print(
                f"server: gunicorn --workers {args.workers} --threads {args.threads} (database {health.get('database')}, "
                f"rate limits in {'Redis' if redis_url else 'the database'}); load: wrk -t{args.wrk_threads} "
                f"-c{args.connections} -d{args.seconds}s per target, HIS: {his_label(args)}"
            )
            result["b_json"] = self.b_json()
            show("b_json", result["b_json"])
            # A short warm-up of the hold path (imports, connections), on slots of its own.
            self.winning_holds("warm-up", seconds=1, connections=args.connections, share=args.pool // 20)
            hold = self.winning_holds("hold", seconds=args.seconds, connections=args.connections, share=int(args.pool * 0.4))
            hold.db = self.verify({
                "session_ids": self.spec["pool_session_ids"], "answered_wins": hold.wins,
            })
            self.check_statuses(hold, {201})
            show("hold", hold.figures, hold)
            result["hold"] = hold
            result["soldout"] = self.soldout()
            show("soldout", result["soldout"].figures, result["soldout"])
            result["b_sql"] = self.pgbench()
            if result["b_sql"]:
                s = result["b_sql"]
                print(f"   {'b_sql':13} {s['tps']:8.1f} tx/s   pgbench -c{args.pgbench_clients} -T{int(args.seconds)}, "
                      f"{s['transactions']} transactions, database CPU {s['cpu_db_ms_per_tx']:.2f} ms/tx")
            if args.sweep:
                share = int(args.pool * 0.55) // len(args.sweep)
                for c in args.sweep:
                    load = self.winning_holds(f"sweep-{c}", seconds=args.sweep_seconds, connections=c, share=share)
                    self.check_statuses(load, {201}, repeats_answered_409=True)
                    show(f"sweep {c}c", load.figures, load)
                    result["sweep"][c] = load
            hold_rps = hold.figures["rps"]
            for i, burst in enumerate(self.spec["bursts"]):
                load = self.burst(i, burst, hold_rps)
                show(load.name, load.figures, load)
                result["bursts"].append(load)
            # Every pool slot some winning run asked for: held once, then free and claimable once lapsed.
            runs = [hold, *result["sweep"].values()]
            pool_db = self.verify({
                "session_ids": self.spec["pool_session_ids"],
                "asked_slot_ids": [s for load in runs for s in load.asked],
                "answered_wins": sum(load.wins for load in runs), "expire": True, "claim_sample": 3,
            })
            result["pool_db"] = pool_db
        finally:
            if self.sampler is not None:
                self.sampler.close()
            self.server.stop()
        return result


def answered(figures: dict) -> dict:
    """A 429 of admission control is load shed by design: req/s and CPU per request count the
    answered requests only (a win, a loser's 409, B_json's 200); the 429s are reported beside them
    (the latency percentiles, from wrk, include them)."""
    shed = figures["statuses"].get(429, 0)
    figures["shed"] = shed
    figures["cpu_ms_per_req"] = figures["cpu_ms_per_req"] * figures["requests"] / max(1, figures["requests"] - shed)
    figures["rps"] = (figures["requests"] - shed) / figures["seconds"] if figures["seconds"] else 0.0
    return figures


def show(name: str, f: dict, load: Load | None = None) -> None:
    statuses = " ".join(f"{code}:{n}" for code, n in f.get("statuses", {}).items())
    print(
        f"   {name:13} {f['rps']:8.1f} answered/s  p50 {f['p50_ms']:6.1f}  p99 {f['p99_ms']:7.1f}  p99.9 {f['p999_ms']:7.1f}"
        f"  max {f['max_ms']:7.1f} ms  server+db CPU {f['cpu_ms_per_req']:6.2f} ms/req  [{statuses}]"
        f"  socket errors {f['socket_errors']}"
        + (f"  HIS CPU {f['cpu_his_s'] * 1000 / max(1, f['requests']):.2f} ms/req" if "cpu_his_s" in f else "")
        + (f"\n      refused: {f['refusals']}" if f.get("refusals") else "")
    )
    if load is not None:
        d = load.db
        if d:
            print(
                f"      db: live holds {d['live_holds']} on {d['live_hold_slots']} slots, held slots {d['held_slots']}, "
                f"oversold {len(d['oversold_slots'])}" + (f", unsold {d['unsold']}" if "unsold" in d else "")
                + (f", unsold after expiry {d['unsold_after_expiry']}" if "unsold_after_expiry" in d else "")
            )
        for failure in load.failures:
            print(f"      FAILED: {failure}")


# --- figures and checks ---------------------------------------------------------------------------


def oversold_of(load: Load) -> int:
    d = load.db
    if not d:
        return 0
    over = len(d["oversold_slots"]) + d["wins_beyond_db"] + d["held_without_live_hold"] + d["live_hold_on_unheld_slot"]
    if load.name == "soldout":
        over += load.wins  # the slot was taken before the run: any 201 sold it twice
    elif load.asked and d["outside_asked"]:
        over += d["outside_asked"]  # holds on slots nobody in this run asked for
    return over


def summarise(result: dict, args: argparse.Namespace) -> dict:
    hold, soldout, b_json, b_sql = result["hold"], result["soldout"], result["b_json"], result["b_sql"]
    for load in [hold, soldout, *result["sweep"].values(), *result["bursts"]]:
        n = oversold_of(load)
        if n:
            load.failures.append(f"OVERSOLD: {n} (see the db line)")
        if load.db.get("unsold"):
            load.failures.append(f"UNSOLD: {load.db['unsold']}")
    pool = result["pool_db"]
    pool_unsold = pool["unsold_after_expiry"]
    # Each pool slot asked for ended held, unless its request was refused or still in flight.
    runs = [hold, *result["sweep"].values()]
    unanswered_or_refused = sum(sum(load.figures["sent"]) - load.wins for load in runs)
    pool_unsold += max(0, pool["asked_unsold"] - unanswered_or_refused)
    oversold = sum(oversold_of(load) for load in [hold, soldout, *result["sweep"].values(), *result["bursts"]])
    oversold += len(pool["oversold_slots"]) + pool["wins_beyond_db"]
    unsold = pool_unsold + sum(load.db.get("unsold", 0) for load in result["bursts"])
    failures = [f"{load.name}: {x}" for load in [hold, soldout, *result["sweep"].values(), *result["bursts"]] for x in load.failures]
    if pool_unsold:
        failures.append(f"pool: {pool_unsold} slots neither held nor claimable after expiry")
    if b_sql and b_sql["failed"]:
        failures.append(f"b_sql: {b_sql['failed']} pgbench transactions failed")

    def ratio(a: float, b: float | None) -> float | None:
        return round(a / b, 4) if b else None

    h_f, s_f = hold.figures, soldout.figures
    out: dict = {
        "database": "postgresql" if args.database_url else "sqlite",
        "his": f"simulator-{args.his_latency_ms}ms" if args.his == "simulator" else "local_pool",
        "seconds_per_target": args.seconds,
        "connections": args.connections,
        "oversold": oversold,
        "unsold": unsold,
        "hold_rps": round(h_f["rps"], 1),
        "hold_p50_ms": round(h_f["p50_ms"], 2),
        "hold_p99_ms": round(h_f["p99_ms"], 2),
        "hold_p999_ms": round(h_f["p999_ms"], 2),
        "hold_wins": hold.wins,
        "timeouts": sum(load.figures["timeouts"] for load in [hold, soldout, *result["sweep"].values(), *result["bursts"]]),
        "soldout_rps": round(s_f["rps"], 1),
        "soldout_p99_ms": round(s_f["p99_ms"], 2),
        "b_json_rps": round(b_json["rps"], 1),
        "b_sql_tps": round(b_sql["tps"], 1) if b_sql else None,
        "hold_vs_json": ratio(h_f["rps"], b_json["rps"]),
        "soldout_vs_json": ratio(s_f["rps"], b_json["rps"]),
        "hold_vs_sql": ratio(h_f["rps"], b_sql["tps"]) if b_sql else None,
        "hold_cpu_ms": round(h_f["cpu_ms_per_req"], 3),
        "hold_his_cpu_ms": round(h_f["cpu_his_s"] * 1000 / max(1, h_f["requests"]), 3) if "cpu_his_s" in h_f else None,
        "soldout_cpu_ms": round(s_f["cpu_ms_per_req"], 3),
        "b_json_cpu_ms": round(b_json["cpu_ms_per_req"], 3),
        "b_sql_db_cpu_ms": round(b_sql["cpu_db_ms_per_tx"], 3) if b_sql else None,
        "statuses": {
            name: {str(k): v for k, v in load.figures["statuses"].items()} for name, load in (("hold", hold), ("soldout", soldout))
        },
        "bursts": [
            {"name": load.name, "rps": round(load.figures["rps"], 1), "wins": load.wins,
             "expected_wins": load.db["expected_wins"], "unsold": load.db["unsold"], "oversold": oversold_of(load),
             "statuses": {str(k): v for k, v in load.figures["statuses"].items()}}
            for load in result["bursts"]
        ],
        "unsold_after_expiry": pool["unsold_after_expiry"] + sum(load.db["unsold_after_expiry"] for load in result["bursts"]),
    }
    if result["sweep"]:
        sweep = result["sweep"]
        out["sweep"] = {
            str(c): {"rps": round(load.figures["rps"], 1), "p99_ms": round(load.figures["p99_ms"], 2),
                     "max_ms": round(load.figures["max_ms"], 2), "timeouts": load.figures["timeouts"],
                     "statuses": {str(k): v for k, v in load.figures["statuses"].items()},
                     "refusals": load.figures.get("refusals", {})}
            for c, load in sweep.items()
        }
        out["max_latency_ms_by_connections"] = {str(c): round(load.figures["max_ms"], 2) for c, load in sweep.items()}
        out["hold_p99_ms_200c"] = round(sweep[200].figures["p99_ms"], 2) if 200 in sweep else None
        lo, hi = min(sweep), max(sweep)
        out[f"throughput_ratio_{hi}_vs_{lo}"] = ratio(sweep[hi].figures["rps"], sweep[lo].figures["rps"])
        out["sweep_429"] = sum(load.figures["statuses"].get(429, 0) for load in sweep.values())
    out["failures"] = failures
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 s per target, 3 bursts, a small sweep: under 3 minutes")
    parser.add_argument("--seconds", type=float, help="wrk and pgbench duration per target (default 30, 5 with --quick)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections = patients (default 64)")
    h.add_server_arguments(parser)
    parser.add_argument("--redis-url", help="rate limits in this Redis (default redis://127.0.0.1:6379/0 on PostgreSQL)")
    parser.add_argument("--no-redis", action="store_true", help="count rate limits in the database")
    parser.add_argument("--pool", type=int, help="free slots for winning holds (default 250,000, 60,000 with --quick)")
    parser.add_argument("--pgbench-pool", type=int, help="free slots for B_sql (default 300,000, 60,000 with --quick)")
    parser.add_argument("--pgbench-clients", type=int, default=8, help="pgbench connections (default 8)")
    parser.add_argument("--bursts", type=int, help="randomized bursts (default 20, 3 with --quick)")
    parser.add_argument("--burst-max-connections", type=int, help="most patients in a burst (default 2000, 400 with --quick)")
    parser.add_argument("--sweep", help="connection counts for the hold sweep (default 50,200,2000; 50,200,1000 quick; 'none')")
    parser.add_argument("--sweep-seconds", type=float, help="wrk duration per sweep step (default 15, 4 with --quick)")
    parser.add_argument("--duration", type=float, help="stop the whole run after this many seconds (default 1800, 300 quick)")
    parser.add_argument("--server-log-level", default="INFO", help="GUAHAO_LOG_LEVEL of the server (default INFO, as deployed)")
    parser.add_argument("--his", choices=("simulator", "none"), default="simulator", help="the hospital's HIS: the HIS simulator (default) or none (the local pool)")
    parser.add_argument("--no-his", dest="his", action="store_const", const="none", help="same as --his none: the local pool, no HIS call")
    parser.add_argument("--his-latency-ms", type=int, default=20, help="the HIS simulator answers each call after this long (default 20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, logs, plans)")
    args = parser.parse_args(argv)
    q = args.quick
    args.seconds = args.seconds or (5 if q else 30)
    args.pool = args.pool or (60_000 if q else 250_000)
    args.pgbench_pool = args.pgbench_pool or (60_000 if q else 300_000)
    args.bursts = args.bursts if args.bursts is not None else (3 if q else 20)
    args.burst_max_connections = args.burst_max_connections or (400 if q else 2000)
    sweep = args.sweep or ("50,200,1000" if q else "50,200,2000")
    args.sweep = [] if sweep == "none" else sorted({int(x) for x in sweep.split(",") if x.strip()})
    args.sweep_seconds = args.sweep_seconds or (4 if q else 15)
    args.duration = args.duration or (300 if q else 1800)
    if args.database_url is None and os.environ.get("GUAHAO_DATABASE_URL", "").startswith(("postgresql://", "postgres://")):
        args.database_url = os.environ["GUAHAO_DATABASE_URL"]
    if args.database_url and not args.database_url.startswith(("postgresql://", "postgres://")):
        parser.error("--database-url must be postgresql://… (leave it out for SQLite)")
    if min(args.connections, args.workers, args.threads, args.wrk_threads, args.pgbench_clients) < 1:
        parser.error("--connections, --workers, --threads, --wrk-threads and --pgbench-clients must be at least 1")
    if args.his_latency_ms < 0:
        parser.error("--his-latency-ms is 0 or more")
    if args.burst_max_connections < 50 or any(c < 1 for c in args.sweep):
        parser.error("--burst-max-connections is at least 50, sweep counts at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not h.need_wrk("bench/release_burst.py"):
        return 2

    def body(deadline: h.Deadline, workdir: Path) -> int:
        print(
            f"release burst: {args.connections} patients per target, gunicorn {args.workers}×{args.threads}, "
            f"{args.bursts} bursts, sweep {args.sweep or 'none'}; {os.cpu_count()} CPUs shared by server, "
            f"database{', HIS simulator' if args.his == 'simulator' else ''} and load generator; HIS: "
            + his_label(args)
        )
        figures = summarise(Bench(args, deadline, workdir).run(), args)
        failed = bool(figures["failures"] or figures["oversold"] or figures["unsold"])
        print("\nresult: " + ("INVARIANT VIOLATED: " + "; ".join(figures["failures"]) if failed else "all invariants held"))
        print(json.dumps(figures, ensure_ascii=False))
        return 1 if failed else 0

    return h.guarded(body, duration=args.duration, prefix="guahao-bench-", keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
