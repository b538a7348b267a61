"""A channel delivers a status message to a patient's account (WeChat official account, SMS, in-app)."""

from __future__ import annotations

from typing import Protocol


class MessageChannel(Protocol):
    name: str

    def send(self, *, account_id: int, title: str, text: str) -> None: ...
