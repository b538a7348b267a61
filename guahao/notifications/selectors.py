from __future__ import annotations

import functools

from django.conf import settings

from guahao.notifications.channels.base import MessageChannel


@functools.cache
def channel() -> MessageChannel:
    name = getattr(settings, "MESSAGE_CHANNEL", "log")
    if name == "log":
        from guahao.notifications.channels.log import LogChannel

        return LogChannel()
    raise ValueError(f"unknown message channel {name!r}")
