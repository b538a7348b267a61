"""`guahao check --deploy`: what is allowed in production but worth a second look. What production
must not start with is refused at start (guahao/environment.py), not reported here."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.database, deploy=True)
def sqlite_beyond_one_machine(app_configs, **kwargs) -> list:
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        return [Warning("SQLite serves one machine; use PostgreSQL beyond that", id="guahao.W002")]
    return []
