"""What the sandbox tests share: a clock the test moves, a merchant's notify endpoint, the real
SDKs configured against a gateway as a merchant would, and a patient's browser."""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from alipay import AliPay
from wechatpayv3 import WeChatPay, WeChatPayType

from guahao.payments.sandbox import SandboxGateway, SandboxKeys

NOTIFY_URL = "https://merchant.example/notify/wechat"
ALIPAY_NOTIFY_URL = "https://merchant.example/notify/alipay"


class FakeClock:
    """The sandbox's business clock; starts at 10:00 Beijing time of a fixed day."""

    def __init__(self) -> None:
        self.moment = dt.datetime(2025, 3, 10, 2, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += dt.timedelta(**delta)


class Inbox:
    """A merchant's notify endpoint as deliver_due's `send`: records, answers `answer`."""

    def __init__(
        self, answer: tuple[int, bytes] | Callable[..., tuple[int, bytes]] = (200, b"")
    ) -> None:
        self.answer = answer
        self.sent: list[tuple[str, dict[str, str], bytes]] = []

    def __call__(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        self.sent.append((url, headers, body))
        return self.answer(url, headers, body) if callable(self.answer) else self.answer


def wechat_client(
    keys: SandboxKeys, gateway: SandboxGateway, kind: WeChatPayType = WeChatPayType.H5
) -> WeChatPay:
    k = keys.wechat
    client = WeChatPay(
        wechatpay_type=kind,
        mchid=k.mchid,
        private_key=k.merchant_private_key,
        cert_serial_no=k.merchant_serial_no,
        appid=k.appid,
        apiv3_key=k.apiv3_key,
        notify_url=NOTIFY_URL,
        public_key=k.platform_public_key,
        public_key_id=k.platform_public_key_id,
    )
    client._core._gate_way = gateway.wechat_base
    return client


def alipay_client(
    keys: SandboxKeys, gateway: SandboxGateway, *, private_key: str | None = None
) -> AliPay:
    k = keys.alipay
    client = AliPay(
        appid=k.app_id,
        app_notify_url=ALIPAY_NOTIFY_URL,
        app_private_key_string=private_key or k.app_private_key,
        alipay_public_key_string=k.alipay_public_key,
        sign_type="RSA2",
    )
    client._gateway = gateway.alipay_gateway
    return client


class _Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_BROWSER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _Stay())


def browse(url: str, form: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """The patient's browser: GET, or POST `form`; redirects are reported, not followed."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with _BROWSER.open(urllib.request.Request(url, data=data), timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read().decode("utf-8")
