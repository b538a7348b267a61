"""`guahao his-check URL --hospital CODE --secret SECRET`: run the HIS contract's checks
(guahao/his/conformance.py) against a gateway. One line per check, ✓ or ✗ with the operation
named, then a summary; exits 1 when any check fails.

It locks, registers and cancels one number of the gateway and cleans up after itself: run it
against the hospital's test environment, not production.
"""

from __future__ import annotations

import os
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from guahao.his.conformance import run_checks


class Command(BaseCommand):
    help = "Check an HIS gateway against the contract (docs/his.md); exit 1 when any check fails"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("url", help="the gateway's base URL, for example http://127.0.0.1:9100")
        parser.add_argument("--hospital", required=True, help="the hospital code (X-His-Hospital)")
        parser.add_argument("--secret", default=os.environ.get("GUAHAO_HIS_SECRET", ""), help="the shared secret (default: $GUAHAO_HIS_SECRET)")
        parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer (default 5)")
        parser.add_argument("--days", type=int, default=7, help="days of schedule to ask for (default 7)")

    def handle(self, *args: object, url: str, hospital: str, secret: str, timeout: float, days: int, **options: object) -> None:
        if not secret:
            raise CommandError("give --secret or set GUAHAO_HIS_SECRET")
        try:
            checks = run_checks(url, hospital=hospital, secret=secret, timeout=timeout, days=days)
        except ValueError as error:
            raise CommandError(str(error)) from error
        for check in checks:
            self.stdout.write(check.line())
        failed = [c for c in checks if not c.passed]
        operations = sorted({c.operation for c in failed})
        summary = f"his-check: {len(checks) - len(failed)} passed, {len(failed)} failed"
        self.stdout.write(summary + (f" ({', '.join(operations)})" if operations else ""))
        self.stdout.flush()
        if failed:
            sys.exit(1)  # a plain status, as ledger-check: the same 1 from the shell and call_command
