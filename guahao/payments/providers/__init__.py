"""Which provider takes a payment, with which credentials. The patient's channel picks the provider
(微信支付 → WeChat Pay v3, 支付宝 → Alipay); the hospital's merchant account (console: 支付商户号)
gives the credentials, or the platform's account when the hospital has none. In development a
hospital with neither pays through the sandbox gateway (`python -m guahao.payments.sandbox`), which
speaks both providers' real protocols with keys generated under var/.

A payment remembers its merchant (`Payment.merchant_key`): its queries, closing and refunds go
through the account that took the money, whatever the console says later."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import Q

from guahao.payments.providers.base import PaymentProvider

if TYPE_CHECKING:
    from guahao.payments.models import Payment

WECHATPAY = "wechatpay"
ALIPAY = "alipay"
PROVIDER_OF_CHANNEL = {"wechat": WECHATPAY, "alipay": ALIPAY}
PROVIDER_LABELS = {WECHATPAY: "微信支付", ALIPAY: "支付宝"}
# merchant_key of the development sandbox's merchant (a MerchantAccount id otherwise).
SANDBOX = "sandbox"


class NoMerchant(LookupError):
    """No merchant account can take this payment (channel not offered, account missing or off)."""


@dataclass(frozen=True)
class Merchant:
    """What an adapter needs: a MerchantAccount row, or the sandbox's merchant in development."""

    provider: str
    key: str
    app_id: str
    mch_id: str
    serial_no: str
    private_key: str
    provider_public_key: str
    provider_public_key_id: str
    api_v3_key: str
    gateway_url: str  # "" = the provider's production gateway
    version: str = ""  # changes when the row changes, so a cached adapter is rebuilt

    @property
    def notify_url(self) -> str:
        return f"{settings.PUBLIC_URL}/api/v1/payments/notify/{self.provider}/{self.key}"

    def __repr__(self) -> str:  # never print keys
        return f"Merchant({self.provider}, {self.key}, mch_id={self.mch_id})"


def merchant_for(*, hospital_id: int, channel: str) -> Merchant:
    """The merchant a new payment of `hospital_id` through `channel` goes to. Raises NoMerchant."""
    from guahao.payments.models import MerchantAccount

    provider = PROVIDER_OF_CHANNEL.get(channel)
    if provider is None:
        raise NoMerchant(f"channel {channel!r} has no provider")
    rows = MerchantAccount.objects.filter(
        Q(hospital_id=hospital_id) | Q(hospital=None), provider=provider
    )
    accounts = {a.hospital_id: a for a in rows}
    account = accounts.get(hospital_id) or accounts.get(None)
    if account is not None:
        if not account.enabled:
            raise NoMerchant(f"{provider} merchant {account.pk} is switched off")
        return _from_account(account)
    sandbox = sandbox_merchant(provider)
    if sandbox is None:
        raise NoMerchant(f"hospital {hospital_id} has no {provider} merchant account")
    return sandbox


def merchant_by_key(provider: str, key: str) -> Merchant:
    """The merchant a notification URL or a recorded payment names. Raises NoMerchant."""
    from guahao.payments.models import MerchantAccount

    if key == SANDBOX:
        merchant = sandbox_merchant(provider)
        if merchant is None:
            raise NoMerchant("the sandbox is for development only")
        return merchant
    if not key.isdigit() or provider not in PROVIDER_LABELS:
        raise NoMerchant(f"no merchant {provider}/{key}")
    account = MerchantAccount.objects.filter(pk=int(key), provider=provider).first()
    if account is None:
        raise NoMerchant(f"no merchant {provider}/{key}")
    return _from_account(account)


def for_merchant(merchant: Merchant) -> PaymentProvider:
    """The adapter of `merchant`, built once per process and merchant version (the SDK clients
    parse keys when built)."""
    return _adapter(merchant)


def for_payment(payment: Payment) -> PaymentProvider:
    return _adapter(merchant_by_key(payment.provider, payment.merchant_key))


def sandbox_merchant(provider: str) -> Merchant | None:
    """The sandbox gateway's merchant (development only; its keys live in GUAHAO_PAY_SANDBOX_KEYS)."""
    from guahao.environment import is_development

    if not is_development() or not settings.PAY_SANDBOX_URL or provider not in PROVIDER_LABELS:
        return None
    return _sandbox_merchants(settings.PAY_SANDBOX_URL, str(settings.PAY_SANDBOX_KEYS))[provider]


@functools.cache
def _sandbox_merchants(url: str, keys_path: str) -> dict[str, Merchant]:
    from guahao.payments.sandbox.keys import SandboxKeys

    keys = SandboxKeys.load_or_create(Path(keys_path))
    wx, ali = keys.wechat, keys.alipay
    base = url.rstrip("/")
    return {
        WECHATPAY: Merchant(
            provider=WECHATPAY,
            key=SANDBOX,
            app_id=wx.appid,
            mch_id=wx.mchid,
            serial_no=wx.merchant_serial_no,
            private_key=wx.merchant_private_key,
            provider_public_key=wx.platform_public_key,
            provider_public_key_id=wx.platform_public_key_id,
            api_v3_key=wx.apiv3_key,
            gateway_url=base,
        ),
        ALIPAY: Merchant(
            provider=ALIPAY,
            key=SANDBOX,
            app_id=ali.app_id,
            mch_id=ali.seller_id,
            serial_no="",
            private_key=ali.app_private_key,
            provider_public_key=ali.alipay_public_key,
            provider_public_key_id="",
            api_v3_key="",
            gateway_url=base + "/gateway.do",
        ),
    }


def _from_account(account) -> Merchant:
    return Merchant(
        provider=account.provider,
        key=str(account.pk),
        app_id=account.app_id,
        mch_id=account.mch_id,
        serial_no=account.serial_no,
        private_key=account.private_key,
        provider_public_key=account.provider_public_key,
        provider_public_key_id=account.provider_public_key_id,
        api_v3_key=account.api_v3_key,
        gateway_url=account.gateway_url,
        version=account.updated_at.isoformat() if account.updated_at else "",
    )


@functools.lru_cache(maxsize=256)
def _adapter(merchant: Merchant) -> PaymentProvider:
    if merchant.provider == WECHATPAY:
        from guahao.payments.providers.wechatpay import WechatPayProvider

        return WechatPayProvider(merchant)
    if merchant.provider == ALIPAY:
        from guahao.payments.providers.alipay import AlipayProvider

        return AlipayProvider(merchant)
    raise NoMerchant(f"unknown provider {merchant.provider!r}")


def all_merchants() -> list[Merchant]:
    """Every merchant whose bills are reconciled: each account in the console (switched off ones
    too: their refunds still move money), and in development the sandbox's."""
    from guahao.payments.models import MerchantAccount

    merchants = [_from_account(a) for a in MerchantAccount.objects.order_by("id")]
    for provider in PROVIDER_LABELS:
        sandbox = sandbox_merchant(provider)
        if sandbox is not None:
            merchants.append(sandbox)
    return merchants
