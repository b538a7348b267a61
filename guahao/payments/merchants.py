"""Checks of a merchant account as staff enter it: keys that parse, ids in the providers' shapes, a
production gateway unless in development; and a live test that signs a real request with it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from guahao.environment import is_development
from guahao.payments.models import MerchantAccount
from guahao.payments.providers import for_merchant, merchant_by_key
from guahao.payments.providers.base import ProviderRefused, ProviderTimeout
from guahao.payments.providers.wechatpay import WechatPayProvider


@dataclass
class MerchantKeyError(Exception):
    field: str
    message: str


def check_keys(account: MerchantAccount) -> None:
    """Raises MerchantKeyError naming the form field that is wrong."""
    wechat = account.provider == MerchantAccount.Provider.WECHATPAY
    if not account.private_key:
        raise MerchantKeyError("new_private_key", "请填写商户私钥")
    try:
        load_pem_private_key(account.private_key.encode(), password=None)
    except (ValueError, TypeError):
        raise MerchantKeyError(
            "new_private_key", "商户私钥无法解析，请粘贴完整的 PEM 内容（含首尾行）"
        ) from None
    try:
        load_pem_public_key(account.provider_public_key.strip().encode())
    except (ValueError, TypeError):
        raise MerchantKeyError(
            "provider_public_key", "支付机构公钥无法解析，请粘贴完整的 PEM 内容（含首尾行）"
        ) from None
    if wechat:
        if not account.serial_no:
            raise MerchantKeyError("serial_no", "微信支付需要商户证书序列号")
        if not account.provider_public_key_id.startswith("PUB_KEY_ID_"):
            raise MerchantKeyError("provider_public_key_id", "微信支付公钥 ID 以 PUB_KEY_ID_ 开头")
        if len(account.api_v3_key or "") != 32:
            raise MerchantKeyError("new_api_v3_key", "APIv3 密钥应为 32 个字符")
    elif not (
        account.mch_id.startswith("2088") and account.mch_id.isdigit() and len(account.mch_id) == 16
    ):
        raise MerchantKeyError("mch_id", "支付宝卖家用户号为 2088 开头的 16 位数字")
    if (
        account.gateway_url
        and not account.gateway_url.startswith("https://")
        and not is_development()
    ):
        raise MerchantKeyError(
            "gateway_url", "生产环境只能使用 https 网关；留空即为支付机构正式网关"
        )


def check_merchant(account: MerchantAccount) -> tuple[bool, str]:
    """Query an order number that cannot exist: a signed "no such order" proves the keys, the ids
    and the route to the provider; anything else says what is wrong."""
    adapter = for_merchant(merchant_by_key(account.provider, str(account.pk)))
    probe = "GHCHECK" + secrets.token_hex(6).upper()
    try:
        if isinstance(adapter, WechatPayProvider):  # its "no such order" must be verified too
            status, code = adapter.signed_probe(probe)
            if status == 404 and code == "ORDER_NOT_EXIST":
                return True, "连接正常：签名、应答验签均通过"
            return False, f"支付机构拒绝：{status} {code}"
        adapter.query_order(probe)
    except ProviderTimeout as exc:
        return False, f"支付机构无应答或应答验签失败（{exc}）"
    except ProviderRefused as exc:
        if exc.code in ("ORDER_NOT_EXIST", "ACQ.TRADE_NOT_EXIST"):
            return True, "连接正常：签名、应答验签均通过"
        return False, f"支付机构拒绝：{exc}"
    return True, "连接正常：签名、应答验签均通过"
