"""`guahao rotate-keys`: re-encrypt personal data and recompute blind indexes under the current keys
(the first of GUAHAO_DATA_KEYS / GUAHAO_INDEX_KEYS) while the service runs (guahao/keyrotation.py).

    guahao rotate-keys                   one line per batch, then a summary; safe to run again
    guahao rotate-keys --batch-size 200  smaller batches: shorter write transactions
    guahao rotate-keys --check           count what is still on a retired key; exit 1 if anything
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from guahao import keyrotation, pii


class Command(BaseCommand):
    help = "Move personal data onto the current data and index keys, in batches, while running"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size", type=int, default=500, help="rows per batch (default 500)"
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="only count rows still on a retired key; exit 1 if any",
        )

    def handle(
        self, *args: object, batch_size: int = 500, check: bool = False, **options: object
    ) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        data, index = pii.keyrings()
        self.stdout.write(
            f"current keys: data {data.current} (retired: {', '.join(data.retired) or 'none'}), "
            f"index {index.current} (retired: {', '.join(index.retired) or 'none'})"
        )
        try:
            if check:
                self._check(batch_size)
            else:
                self._rotate(batch_size)
        except ValueError as exc:  # a ciphertext under a key that is not configured
            raise CommandError(str(exc)) from exc

    def _rotate(self, batch_size: int) -> None:
        totals: dict[str, list[int]] = {}
        for batch in keyrotation.rotate(batch_size=batch_size):
            self.stdout.write(
                f"{batch.table}\tids {batch.first_pk}-{batch.last_pk}\tread {batch.read}\t"
                f"rotated {batch.rotated}\tskipped {batch.skipped}\t"
                f"digests moved {batch.dependents}"
            )
            self.stdout.flush()
            sums = totals.setdefault(batch.table, [0, 0, 0, 0])
            for i, n in enumerate((batch.read, batch.rotated, batch.skipped, batch.dependents)):
                sums[i] += n
        read, rotated, skipped, moved = (sum(t[i] for t in totals.values()) for i in range(4))
        self.stdout.write(
            f"rotate-keys: {len(totals)} tables, {read} rows read, {rotated} rotated, "
            f"{skipped} skipped, {moved} digests moved"
        )
        if skipped:
            self.stdout.write(
                f"rotate-keys: {skipped} rows were changed by the service meanwhile and left as it "
                "wrote them; run rotate-keys again (it only touches what is still on a retired key)"
            )

    def _check(self, batch_size: int) -> None:
        report = keyrotation.pending(batch_size=batch_size)
        for table, count in sorted(report.rows.items()):
            self.stdout.write(f"{table}\t{count} rows on a retired key")
        for column, count in sorted(report.dependents.items()):
            self.stdout.write(f"{column}\t{count} digests on a retired index key")
        use = ", ".join(f"{kid}: {n}" for kid, n in sorted(report.key_use.items())) or "none"
        self.stdout.write(f"encrypted values by data key: {use}")
        for column, count in sorted(report.unmatched.items()):
            if count:
                self.stdout.write(
                    f"{column}\t{count} digests match no patient and cannot be recomputed: "
                    "after the old index key is removed they match nobody"
                )
        self.stdout.write(f"rotate-keys --check: {report.total} still on retired keys")
        self.stdout.flush()
        if report.total:
            sys.exit(1)  # as ledger-check: the status alone tells the operator to wait
