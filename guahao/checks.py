"""`guahao check --deploy`: refuse the development conveniences in a production deployment."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def production_settings(app_configs, **kwargs) -> list:
    problems = []
    if settings.SECRET_KEY.startswith("dev-only"):
        problems.append(Error("GUAHAO_SECRET_KEY is not set", id="guahao.E001"))
    if not settings.DATA_KEY or not settings.INDEX_KEY:
        problems.append(
            Error(
                "GUAHAO_DATA_KEY and GUAHAO_INDEX_KEY must come from your key management system",
                hint="Development keys under var/ are not for production.",
                id="guahao.E002",
            )
        )
    if settings.PAYMENT_PROVIDER == "sandbox":
        problems.append(Error("GUAHAO_PAYMENT_PROVIDER=sandbox takes no real money", id="guahao.E003"))
    if settings.SMS_CHANNEL == "log":
        problems.append(Error("GUAHAO_SMS_CHANNEL=log writes sign-in codes to the log", id="guahao.E004"))
    if settings.REALNAME_VERIFIER == "sandbox":
        problems.append(Warning("GUAHAO_REALNAME_VERIFIER=sandbox verifies nobody's identity", id="guahao.W001"))
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        problems.append(Warning("SQLite serves one machine; use PostgreSQL beyond that", id="guahao.W002"))
    return problems
