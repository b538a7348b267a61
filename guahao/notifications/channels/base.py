"""The port for outside message channels (公众号 template messages, SMS, the development log).
The in-app list (InboxMessage) is not a channel: every message is written there directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Outgoing:
    """One delivery to send. Title, text and params are already masked."""

    delivery_id: int
    account_id: int
    hospital_id: int | None
    topic: str
    title: str
    text: str
    params: dict[str, str] = field(default_factory=dict)


class ChannelError(Exception):
    """The channel did not take the message this time (no answer, a temporary error): the worker
    tries again with back-off and parks the delivery after too many failures."""


class ChannelRefused(Exception):
    """The channel will never take this message (the user unfollowed, the number is invalid):
    not retried."""


class MessageChannel(Protocol):
    name: str

    def wants(self, *, account_id: int, hospital_id: int | None, topic: str) -> bool:
        """Whether this message goes out on this channel (hospital's settings, a bound openid,
        a template for the topic). Decided when the event is handled."""
        ...

    def send(self, message: Outgoing) -> str:
        """Send; return the channel's reference for it. Raise ChannelError or ChannelRefused."""
        ...
