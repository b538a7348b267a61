"""python -m guahao.payments.sandbox --keys FILE [--host 127.0.0.1] [--port 9200] [--state FILE]
[--probe-rate 0.05] [--refund-delay SECONDS]: the sandbox WeChat Pay and Alipay servers for a
development site, delivering their notifications every second."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import signal
import threading
from collections.abc import Sequence

from guahao.payments.sandbox.keys import SandboxKeys
from guahao.payments.sandbox.ledger import SandboxGateway
from guahao.payments.sandbox.server import serve, start_delivery


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guahao.payments.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=9200, help="0 picks a free port")
    parser.add_argument(
        "--keys", type=pathlib.Path, required=True, help="key file, created if missing"
    )
    parser.add_argument(
        "--state", type=pathlib.Path, help="keep trades, refunds and notifications here"
    )
    parser.add_argument("--probe-rate", type=float, default=0.0, help="share of deliveries probed")
    parser.add_argument(
        "--refund-delay", type=float, default=0.0, help="seconds until a WeChat refund succeeds"
    )
    args = parser.parse_args(argv)

    keys = SandboxKeys.load_or_create(args.keys)
    gateway = SandboxGateway(
        keys, probe_rate=args.probe_rate, refund_delay=dt.timedelta(seconds=args.refund_delay)
    )
    if args.state is not None:
        if args.state.exists():
            gateway.restore(json.loads(args.state.read_text(encoding="utf-8")))
        gateway.state_path = args.state
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before the line: whoever reads it may stop us
        signal.signal(signum, lambda *_: stopping.set())
    server = serve(gateway, host=args.host, port=args.port)
    stop_delivery = start_delivery(gateway)
    print(f"payment sandbox listening on {gateway.url}", flush=True)
    stopping.wait()
    stop_delivery()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
