"""Outside message channels by name (GUAHAO_MESSAGE_CHANNELS); imported only when used."""

from __future__ import annotations

import functools

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from guahao.notifications.channels.base import (
    ChannelError,
    ChannelRefused,
    MessageChannel,
    Outgoing,
)

__all__ = ["CHANNELS", "ChannelError", "ChannelRefused", "MessageChannel", "Outgoing", "channel", "enabled_channels"]

CHANNELS: dict[str, str] = {
    "log": "guahao.notifications.channels.log.LogChannel",
    "wechat": "guahao.notifications.channels.wechat.WechatTemplateChannel",
    "sms": "guahao.notifications.channels.sms.SmsChannel",
}


@functools.cache
def channel(name: str) -> MessageChannel:
    """A channel by its name, or by the dotted path of a class (a hospital's own channel)."""
    target = CHANNELS.get(name) or (name if "." in name else None)
    if target is None:
        raise ImproperlyConfigured(f"unknown message channel {name!r} (GUAHAO_MESSAGE_CHANNELS)")
    return import_string(target)()


def enabled_channels() -> list[MessageChannel]:
    return [channel(name) for name in settings.MESSAGE_CHANNELS]
