"""Fixtures for payment tests: a live hold and a stand-in for booking's completion services (called
inline by the callback)."""

from __future__ import annotations

import sys
import types

import pytest

from guahao.booking.models import Hold
from guahao.payments.tests.helpers import make_hold


@pytest.fixture
def hold(db) -> Hold:
    return make_hold()


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
