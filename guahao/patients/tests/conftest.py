"""Fixtures for the patients app: an SMS outbox that records the codes the service sends."""

from __future__ import annotations

import pytest

from guahao.patients import sms


class SmsOutbox:
    """Stands in for the SMS channel and remembers the last code sent to each phone."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send_code(self, phone: str, code: str) -> None:
        self.sent.append((phone, code))

    def last_code(self, phone: str) -> str:
        return next(code for to, code in reversed(self.sent) if to == phone)


@pytest.fixture
def sms_outbox(monkeypatch: pytest.MonkeyPatch) -> SmsOutbox:
    outbox = SmsOutbox()
    monkeypatch.setattr(sms, "sender", lambda: outbox)
    return outbox


@pytest.fixture
def roomy_add_limits(settings) -> None:
    """Room for many patient adds in one test, for tests of other rules than the add limits."""
    settings.LIMITS = settings.LIMITS | {"patient_add_account": "100/h", "patient_add_ip": "100/h"}
