"""A payment sandbox that speaks the real wire protocols of WeChat Pay API v3 and Alipay's open
platform, standing in for the providers' servers so that adapters built on the real SDKs
(wechatpayv3, python-alipay-sdk) run against it unchanged: requests verified, answers and
notifications signed, errors in each provider's shapes, faults and signature probes on demand.
No Django: it runs in tests, beside a development site, or alone (python -m guahao.payments.sandbox)."""

from guahao.payments.sandbox.keys import AlipayKeys, SandboxKeys, WechatKeys
from guahao.payments.sandbox.ledger import ALIPAY_RETRY, OPERATIONS, WECHAT_RETRY, SandboxGateway
from guahao.payments.sandbox.records import (
    Delivery,
    DuplicateTrade,
    Probe,
    RefundRefused,
    SandboxError,
    SandboxRefund,
    Trade,
    TradeClosed,
    TradeNotFound,
    TradePaid,
)
from guahao.payments.sandbox.server import http_send, running_gateway, serve, start_delivery

__all__ = [
    "ALIPAY_RETRY",
    "OPERATIONS",
    "WECHAT_RETRY",
    "AlipayKeys",
    "Delivery",
    "DuplicateTrade",
    "Probe",
    "RefundRefused",
    "SandboxError",
    "SandboxGateway",
    "SandboxKeys",
    "SandboxRefund",
    "Trade",
    "TradeClosed",
    "TradeNotFound",
    "TradePaid",
    "WechatKeys",
    "http_send",
    "running_gateway",
    "serve",
    "start_delivery",
]
