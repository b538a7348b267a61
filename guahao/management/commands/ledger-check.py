"""`guahao ledger-check`: the nightly consistency check of slots, holds, registrations, payments and
refunds (guahao/ledger.py). Prints one line per violation and a summary line; exits 1 when there is
any violation, so cron and monitoring can alert on the status alone.

    guahao ledger-check            kind <TAB> row <TAB> message, then "ledger-check: N violations"
    guahao ledger-check --json     {"count": N, "violations": [{"kind", "row", "message"}, ...]}
"""

from __future__ import annotations

import dataclasses
import json
import sys

from django.core.management.base import BaseCommand, CommandParser

from guahao.ledger import find_violations


class Command(BaseCommand):
    help = "Check the ledger's invariants (slots, holds, registrations, payments, refunds); exit 1 on any violation"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the violations as one JSON document")

    def handle(self, *args: object, as_json: bool = False, **options: object) -> None:
        violations = find_violations()
        if as_json:
            document = {"count": len(violations), "violations": [dataclasses.asdict(v) for v in violations]}
            self.stdout.write(json.dumps(document, ensure_ascii=False, indent=2))
        else:
            for violation in violations:
                self.stdout.write(f"{violation.kind}\t{violation.row}\t{violation.message}")
            noun = "violation" if len(violations) == 1 else "violations"
            self.stdout.write(f"ledger-check: {len(violations)} {noun}")
        self.stdout.flush()
        if violations:
            # A plain exit status (not CommandError, which call_command would raise as an error):
            # the same 1 from the shell and from call_command in tests.
            sys.exit(1)

