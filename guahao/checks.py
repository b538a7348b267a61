"""`guahao check --deploy`: what is allowed in production but worth a second look. What production
must not start with is refused at start (guahao/environment.py), not reported here."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.database, deploy=True)
def sqlite_beyond_one_machine(app_configs, **kwargs) -> list:
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        return [Warning("SQLite serves one machine; use PostgreSQL beyond that", id="guahao.W002")]
    return []


@register(Tags.security, deploy=True)
def payment_channels_have_merchants(app_configs, **kwargs) -> list:
    """Each channel a hospital offers needs an enabled merchant account (its own or the platform's):
    in production there is no sandbox to fall back on, and patients would meet 该支付方式暂不可用."""
    from django.db import DatabaseError

    from guahao.environment import is_development

    if is_development():
        return []
    try:
        return [Error(message, id="guahao.E010") for message in _channels_without_merchant()]
    except DatabaseError:  # not migrated yet: `migrate` comes after this check in the README
        return []


def _channels_without_merchant() -> list[str]:
    from guahao.catalog.models import Hospital
    from guahao.payments.channels import PaymentChannel
    from guahao.payments.models import MerchantAccount
    from guahao.payments.providers import PROVIDER_OF_CHANNEL

    enabled = set(
        MerchantAccount.objects.filter(enabled=True).values_list("hospital_id", "provider")
    )
    problems = []
    for hospital in Hospital.objects.filter(is_active=True).order_by("id"):
        for channel in hospital.payment_channels:
            provider = PROVIDER_OF_CHANNEL.get(channel)
            if provider is None:
                problems.append(
                    f"{hospital.name}：{PaymentChannel(channel).label}尚未接入，请在控制台关闭该支付方式"
                )
            elif (hospital.id, provider) not in enabled and (None, provider) not in enabled:
                problems.append(
                    f"{hospital.name}：开通了{PaymentChannel(channel).label}，但没有启用的商户号（控制台：支付商户号）"
                )
    return problems


@register(Tags.security, deploy=True)
def message_channels_can_send(app_configs, **kwargs) -> list:
    """A hospital that turned 公众号 or SMS messages on must be able to send them; otherwise its
    patients get the in-app message only, and nobody notices."""
    from django.db import DatabaseError

    try:
        return [Error(message, id="guahao.E011") for message in _channels_that_cannot_send()]
    except DatabaseError:  # not migrated yet
        return []


def _channels_that_cannot_send() -> list[str]:
    from guahao.notifications.models import MessagingSettings
    from guahao.wechat.models import OfficialAccount

    sms_ready = "sms" in settings.MESSAGE_CHANNELS and settings.SMS_ACCESS_KEY_ID and settings.SMS_ACCESS_KEY_SECRET
    wechat_ready = set(OfficialAccount.objects.filter(enabled=True).values_list("hospital_id", flat=True))
    problems = []
    for chosen in MessagingSettings.objects.filter(hospital__is_active=True).select_related("hospital").order_by("hospital_id"):
        name = chosen.hospital.name
        if chosen.sms_enabled and not sms_ready:
            problems.append(
                f"{name}：开通了短信消息，但短信服务未配置（GUAHAO_MESSAGE_CHANNELS 含 sms，"
                "以及 GUAHAO_SMS_ACCESS_KEY_ID / GUAHAO_SMS_ACCESS_KEY_SECRET）"
            )
        if chosen.sms_enabled and not (chosen.sms_sign_name or settings.SMS_SIGN_NAME):
            problems.append(f"{name}：开通了短信消息，但没有短信签名（消息设置或 GUAHAO_SMS_SIGN_NAME）")
        if chosen.wechat_enabled and ("wechat" not in settings.MESSAGE_CHANNELS or chosen.hospital_id not in wechat_ready):
            problems.append(f"{name}：开通了公众号模板消息，但没有启用的公众号（控制台：公众号）或 GUAHAO_MESSAGE_CHANNELS 不含 wechat")
    return problems
