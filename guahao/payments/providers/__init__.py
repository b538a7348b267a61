"""Choosing a payment provider by name (GUAHAO_PAYMENT_PROVIDER by default). One module per provider."""

from __future__ import annotations

import functools

from django.conf import settings
from django.utils.module_loading import import_string

from guahao.payments.providers.base import PaymentProvider

# name → "module:class"; a provider is imported only when first used.
PROVIDERS: dict[str, str] = {
    "sandbox": "guahao.payments.providers.sandbox:SandboxProvider",
}
# Take no real money: production refuses to start with them (guahao.environment). `faulty` is the
# tests' failing wrapper, never registered, named here so it can never be configured by mistake.
DEVELOPMENT_ONLY = frozenset({"sandbox", "faulty"})


class UnknownProvider(LookupError):
    pass


def provider(name: str | None = None) -> PaymentProvider:
    """The provider called `name`, or the one new payments use. Raises UnknownProvider."""
    return _load(name or settings.PAYMENT_PROVIDER)


def accepts_notifications_from(name: str) -> bool:
    """Only the configured providers (GUAHAO_PAYMENT_PROVIDERS) may call the notification URL."""
    return name in settings.PAYMENT_PROVIDERS and name in PROVIDERS


@functools.cache
def _load(name: str) -> PaymentProvider:
    target = PROVIDERS.get(name)
    if target is None:
        raise UnknownProvider(f"unknown payment provider {name!r}")
    return import_string(target.replace(":", "."))()
