"""The payment channels a patient can pay through (DESIGN.md §1). No imports from other apps, so the
catalog (which hospital offers which) and booking (which one a hold chose) can both name them."""

from __future__ import annotations

from django.db import models


class PaymentChannel(models.TextChoices):
    WECHAT = "wechat", "微信支付"
    ALIPAY = "alipay", "支付宝"
    UNIONPAY = "unionpay", "银行卡"


# What a new hospital offers until the console says otherwise.
DEFAULT_CHANNELS = (PaymentChannel.WECHAT, PaymentChannel.ALIPAY)


def default_channels() -> list[str]:
    """The default of Hospital.payment_channels (a callable, so rows never share one list)."""
    return [str(c) for c in DEFAULT_CHANNELS]


def in_channel_order(codes: list[str]) -> list[str]:
    """Known codes only, each once, in the order the channels are declared (what patients see)."""
    wanted = set(codes)
    return [c for c in PaymentChannel.values if c in wanted]


def channel_labels(codes: list[str]) -> str:
    """微信支付、支付宝: the offered channels as a patient reads them."""
    return "、".join(PaymentChannel(c).label for c in in_channel_order(codes))
