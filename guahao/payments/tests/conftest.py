"""Fixtures for payment tests: the channel (a test using it runs for both providers), a stand-in for
booking's completion services (called inline by the callback), provider faults on demand, and a
sandbox gateway left without queued faults after each test."""

from __future__ import annotations

import sys
import types

import pytest

from guahao.payments.tests.helpers import CHANNELS, ProviderFaults, drain_gateway_faults


@pytest.fixture(params=CHANNELS)
def channel(request) -> str:
    """微信支付 and 支付宝: a test using this runs once for each provider."""
    return request.param


@pytest.fixture
def booking_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Replaces booking's completion services (called inline by the callback) with recorders."""
    calls: list[tuple[str, int]] = []
    fake = types.ModuleType("guahao.booking.services")

    def complete_paid_hold(*, payment_id: int) -> None:
        calls.append(("complete_paid_hold", payment_id))

    def finish_refund(*, refund_id: int) -> None:
        calls.append(("finish_refund", refund_id))

    fake.complete_paid_hold = complete_paid_hold
    fake.finish_refund = finish_refund
    monkeypatch.setitem(sys.modules, "guahao.booking.services", fake)
    return calls


@pytest.fixture
def provider_faults(monkeypatch: pytest.MonkeyPatch) -> ProviderFaults:
    """Provider calls of the payment services fail on demand (see ProviderFaults)."""
    return ProviderFaults.install(monkeypatch)


@pytest.fixture(autouse=True)
def no_gateway_faults_left():
    """A fault a test queued at the shared sandbox gateway and did not use must not hit the next."""
    yield
    drain_gateway_faults()
