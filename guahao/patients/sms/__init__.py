"""Sending sign-in codes by SMS; the channel is chosen by GUAHAO_SMS_CHANNEL."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from guahao.patients.sms.base import SmsNotSent, SmsSender

__all__ = ["SmsNotSent", "SmsSender", "sender"]


def sender() -> SmsSender:
    name = settings.SMS_CHANNEL
    if name == "log":
        from guahao.patients.sms.log import LogSmsSender

        return LogSmsSender()
    raise ImproperlyConfigured(f"unknown GUAHAO_SMS_CHANNEL {name!r}")
