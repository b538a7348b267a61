"""`guahao his-simulator --bind 127.0.0.1:9100 --hospital DEMO --secret …`: run the HIS simulator
(guahao/his/simulator) in the foreground until Ctrl-C. The same as `python -m guahao.his.simulator`,
which tests use because it starts without Django."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from guahao.his.simulator.__main__ import add_arguments, serve


class Command(BaseCommand):
    help = "Run a simulated hospital HIS gateway (the contract of docs/his.md) with fault injection on loopback"

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: object, **options: object) -> None:
        try:
            serve(
                bind=str(options["bind"]), hospital=str(options["hospital"]), secret=str(options["secret"]),
                seed=str(options["seed"]), days=int(options["days"]), attendance=float(options["attendance"]),  # type: ignore[arg-type]
                breaks=list(options["breaks"]), verbose=bool(options["verbose"]),  # type: ignore[call-overload]
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
