"""`python -m guahao.notifications.sms.simulator`: run the SMS simulator until interrupted. The first
line on stdout is "sms-simulator: listening on http://HOST:PORT", which the test helper reads to
learn the port when it binds port 0."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from guahao.notifications.sms.simulator.provider import SmsProvider
from guahao.notifications.sms.simulator.server import SimulatorServer
from guahao.simulators import loopback, serve

# Development only: the simulator is never the real provider.
DEFAULT_KEYS = {"sms-simulator-key": "sms-simulator-secret"}


def parse_keys(value: str) -> dict[str, str]:
    """--keys: a JSON object {AccessKeyId: AccessKeySecret}, inline or in a file."""
    text = value if value.lstrip().startswith("{") else Path(value).read_text(encoding="utf-8")
    keys = json.loads(text)
    if not isinstance(keys, dict) or not keys or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in keys.items()):
        raise ValueError("--keys is a JSON object of AccessKeyId → AccessKeySecret")
    return keys


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sms-simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=9400, help="0 picks a free port")
    parser.add_argument("--keys", default=json.dumps(DEFAULT_KEYS), help='access keys, e.g. \'{"LTAI-dev": "secret"}\', or a JSON file')
    parser.add_argument("--state", type=Path, help="keep sign names, templates, sent messages and rate-limit history here")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    options = parser.parse_args(argv)
    try:
        host = loopback(options.host)
        provider = SmsProvider(keys=parse_keys(options.keys), state_path=options.state)
    except (ValueError, OSError) as error:
        parser.exit(2, f"sms-simulator: {error}\n")
    serve(SimulatorServer((host, options.port), provider, verbose=options.verbose), name="sms-simulator")

if __name__ == "__main__":
    main(sys.argv[1:])
