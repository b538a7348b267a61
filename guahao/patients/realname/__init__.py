"""Real-name verification (实名核验) of visiting patients; chosen by GUAHAO_REALNAME_VERIFIER."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from guahao.patients.realname.base import RealnameRejected, RealnameUnavailable, RealnameVerifier

__all__ = ["RealnameRejected", "RealnameUnavailable", "RealnameVerifier", "verifier"]


def verifier() -> RealnameVerifier:
    name = settings.REALNAME_VERIFIER
    if name == "sandbox":
        from guahao.patients.realname.sandbox import SandboxRealnameVerifier

        return SandboxRealnameVerifier()
    raise ImproperlyConfigured(f"unknown GUAHAO_REALNAME_VERIFIER {name!r}")
