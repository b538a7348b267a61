"""Sending sign-in codes by SMS; the channel is chosen by GUAHAO_SMS_CHANNEL."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from guahao.patients.sms.base import SmsNotSent, SmsSender

__all__ = ["CHANNELS", "DEVELOPMENT_ONLY", "SmsNotSent", "SmsSender", "sender"]

# name → "module:class"; a channel is imported only when used.
CHANNELS: dict[str, str] = {
    "log": "guahao.patients.sms.log:LogSmsSender",
    "http": "guahao.patients.sms.http:HttpSmsSender",
    "aliyun": "guahao.patients.sms.aliyun:AliyunSmsSender",
}
# Writes sign-in codes to the log: production refuses to start with it (guahao.environment).
DEVELOPMENT_ONLY = frozenset({"log"})


def sender() -> SmsSender:
    target = CHANNELS.get(settings.SMS_CHANNEL)
    if target is None:
        raise ImproperlyConfigured(f"unknown GUAHAO_SMS_CHANNEL {settings.SMS_CHANNEL!r}")
    return import_string(target.replace(":", "."))()
