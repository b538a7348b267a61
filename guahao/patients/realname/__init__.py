"""Real-name verification (实名核验) of visiting patients; chosen by GUAHAO_REALNAME_VERIFIER."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from guahao.patients.realname.base import RealnameRejected, RealnameUnavailable, RealnameVerifier

__all__ = [
    "DEVELOPMENT_ONLY",
    "VERIFIERS",
    "RealnameRejected",
    "RealnameUnavailable",
    "RealnameVerifier",
    "verifier",
]

# name → "module:class"; a verifier is imported only when used.
VERIFIERS: dict[str, str] = {
    "sandbox": "guahao.patients.realname.sandbox:SandboxRealnameVerifier",
    "http": "guahao.patients.realname.http:HttpRealnameVerifier",
}
# Verifies nobody's identity: production refuses to start with it (guahao.environment).
DEVELOPMENT_ONLY = frozenset({"sandbox"})


def verifier() -> RealnameVerifier:
    target = VERIFIERS.get(settings.REALNAME_VERIFIER)
    if target is None:
        raise ImproperlyConfigured(f"unknown GUAHAO_REALNAME_VERIFIER {settings.REALNAME_VERIFIER!r}")
    return import_string(target.replace(":", "."))()
