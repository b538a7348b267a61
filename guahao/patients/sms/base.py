"""The SMS port: what guahao needs from an SMS gateway to sign patients in."""

from __future__ import annotations

from typing import Protocol


class SmsNotSent(Exception):
    """The gateway refused the message or did not answer; the patient may ask for a new code."""


class SmsSender(Protocol):
    def send_code(self, phone: str, code: str) -> None:
        """Deliver a sign-in code to a mainland mobile number, or raise SmsNotSent."""
        ...
