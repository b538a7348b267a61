"""`python -m guahao.his.simulator`: run the HIS simulator until interrupted. The first line on
stdout is "his-simulator: listening on http://HOST:PORT (hospital CODE)", which
`running_simulator()` reads to learn the port when it binds port 0."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from guahao.his.simulator.inventory import BREAKS
from guahao.his.simulator.server import Simulator, SimulatorServer, parse_bind
from guahao.simulators import serve as run_server

DEFAULT_SECRET = "his-simulator-secret"  # development only: the simulator is never a real HIS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind", default="127.0.0.1:9100", help="loopback HOST:PORT (port 0: any free port)")
    parser.add_argument("--hospital", default="DEMO", help="the hospital code guahao sends in X-His-Hospital")
    parser.add_argument("--secret", default=os.environ.get("GUAHAO_HIS_SIMULATOR_SECRET", DEFAULT_SECRET), help="the shared HMAC secret (default: $GUAHAO_HIS_SIMULATOR_SECRET or a development value)")
    parser.add_argument("--seed", choices=("demo", "empty"), default="demo", help="demo: a small hospital with sessions; empty: nothing until /_control/sessions")
    parser.add_argument("--days", type=int, default=7, help="days of sessions from today (demo seed)")
    parser.add_argument("--attendance", type=float, default=0.0, metavar="RATE", help="share of registrations checked in automatically as their windows come (0..1)")
    parser.add_argument("--break", dest="breaks", action="append", default=[], choices=sorted(BREAKS), help="violate the contract this way (repeatable), to see `guahao his-check` fail")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")


def serve(*, bind: str, hospital: str, secret: str, seed: str, days: int, attendance: float = 0.0, breaks: Sequence[str] = (), verbose: bool = False) -> None:
    address = parse_bind(bind)
    sim = Simulator(hospital=hospital, secret=secret, seed=seed, days=days, breaks=tuple(breaks), attendance_rate=attendance)
    server = SimulatorServer(address, sim, verbose=verbose)
    server.stopping = sim.stopping  # held connections wait on the simulator's own event
    run_server(server, name="his-simulator", note=f" (hospital {hospital})")

def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="his-simulator", description=__doc__)
    add_arguments(parser)
    options = parser.parse_args(argv)
    try:
        serve(bind=options.bind, hospital=options.hospital, secret=options.secret, seed=options.seed, days=options.days, attendance=options.attendance, breaks=options.breaks, verbose=options.verbose)
    except ValueError as error:
        parser.exit(2, f"his-simulator: {error}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
