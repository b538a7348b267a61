"""The `guahao` command: Django's management commands under one name (guahao migrate, guahao demo,
guahao run, guahao worker, guahao token …)."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guahao.settings")
    from django.core.management import execute_from_command_line

    from guahao.environment import UnsafeStart, refuse

    try:
        execute_from_command_line(["guahao", *sys.argv[1:]])
    except UnsafeStart as exc:  # raised while Django sets up, before the command runs
        refuse(exc)


if __name__ == "__main__":
    main()
