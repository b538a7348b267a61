"""Helpers for payment tests: a live hold to pay for through either provider, the sandbox gateway's
notifications delivered (or re-signed, or forged) to our callback through Django's test client, and
provider calls that fail on demand."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import pytest
from alipay import AliPay
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpayv3.utils import load_private_key, rsa_sign

from guahao import clock
from guahao.booking.models import Hold
from guahao.booking.states import HoldState
from guahao.catalog.models import Hospital
from guahao.faults import FaultQueue
from guahao.payments import services
from guahao.payments.models import Payment
from guahao.payments.providers import PROVIDER_OF_CHANNEL
from guahao.payments.providers.base import PayParams, ProviderRefused, ProviderTimeout
from guahao.payments.providers.faulty import FaultyProvider
from guahao.payments.sandbox import Delivery, SandboxGateway
from guahao.scheduling.models import Slot
from guahao.testing import (
    client_send,
    make_account,
    make_department,
    make_hospital,
    make_session,
    open_pay_page,
    pay_at_provider,
    payment_sandbox,
    wrap_provider,
)

CHANNELS = ("wechat", "alipay")
# Tests that hold for both providers run once per channel.
both_channels = pytest.mark.parametrize("channel", CHANNELS)

WECHAT_SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"


def make_hold(
    channel: str = Hold.Channel.WECHAT, *, fee_fen: int = 1000, hospital: Hospital | None = None
) -> Hold:
    """A hold as booking leaves it when it opens a payment order: PAYING, its slot claimed."""
    hospital = hospital or make_hospital(name="测试人民医院")
    session = make_session(make_department(hospital, name="心血管内科"), fee_fen=fee_fen)
    now = clock.now()
    expires_at = now + dt.timedelta(minutes=10)
    slot = session.slots.first()
    Slot.objects.filter(id=slot.id).update(state=Slot.State.HELD, held_until=expires_at)
    return Hold.objects.create(
        account=make_account(),
        slot=slot,
        session=session,
        state=HoldState.PAYING,
        expires_at=expires_at,
        fee_fen=fee_fen,
        created_at=now,
        updated_at=now,
        channel=channel,
        insurance=False,
    )


def provider_of(channel: str) -> str:
    return PROVIDER_OF_CHANNEL[channel]


def start(hold: Hold) -> tuple[Payment, PayParams]:
    """Open an order for `hold` and, as the patient's browser does, open its pay page (for Alipay
    that is when the trade comes to exist at the provider)."""
    payment, params = services.start_payment(hold=hold)
    if payment.provider == "alipay":
        assert open_pay_page(params.pay_url) == 200
    return payment, params


def pay(payment: Payment, *, succeed: bool = True) -> Delivery | None:
    """The patient pays on the provider's cashier; returns the paid notification it queued."""
    pay_at_provider(payment.out_trade_no, succeed=succeed)
    return trade_delivery(payment) if succeed else None


def trade_delivery(payment: Payment) -> Delivery:
    (delivery,) = [
        d for d in payment_sandbox().notifications(payment.out_trade_no) if d.kind == "trade"
    ]
    return delivery


def refund_deliveries(payment: Payment) -> list[Delivery]:
    return [d for d in payment_sandbox().notifications(payment.out_trade_no) if d.kind == "refund"]


def deliver(delivery: Delivery) -> tuple[int, bytes]:
    """The provider sends `delivery` now (freshly signed) to our callback; our reply."""
    return client_send(*delivery.signed())


def paid_payment(hold: Hold) -> Payment:
    """An order of `hold`, paid at the provider and settled by its notification."""
    payment, _ = start(hold)
    assert accepted(payment.provider, deliver(pay(payment)))
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    return payment


def run_worker_without_notifications() -> int:
    """Worker passes until there is nothing left to do, while the provider's notifications never
    arrive (they stay queued at the sandbox)."""
    from guahao.worker import run_once

    total = 0
    while (done := run_once(worker_id="test")) > 0:
        total += done
    return total


# --- our callback's replies, in each provider's form ---------------------------------------------


def accepted(provider: str, reply: tuple[int, bytes]) -> bool:
    """WeChat reads the status (2xx, with its SUCCESS body); Alipay the literal body "success"."""
    status, body = reply
    if provider == "wechatpay":
        return status == 200 and json.loads(body) == {"code": "SUCCESS", "message": "成功"}
    return status == 200 and body == b"success"


def refused(provider: str, reply: tuple[int, bytes]) -> bool:
    """A refusal the provider understands (it sends again later): never a 500."""
    status, body = reply
    if provider == "wechatpay":
        return status == 401 and json.loads(body)["code"] == "FAIL"
    return status == 400 and body == b"fail"


# --- notifications built by hand, as the providers sign them --------------------------------------


def wechat_signed_headers(
    body: str, *, timestamp: int | None = None, nonce: str | None = None, serial: str | None = None
) -> dict[str, str]:
    """Wechatpay-* headers over `body`, signed with the sandbox platform's private key through
    wechatpayv3's own signing helper (RSA-SHA256 of "timestamp\\nnonce\\nbody\\n")."""
    keys = payment_sandbox().keys.wechat
    timestamp = int(clock.now().timestamp()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_hex(16).upper()
    signature = rsa_sign(
        load_private_key(keys.platform_private_key), f"{timestamp}\n{nonce}\n{body}\n"
    )
    return {
        "Content-Type": "application/json",
        "Wechatpay-Timestamp": str(timestamp),
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": serial or keys.platform_public_key_id,
        "Wechatpay-Signature-Type": WECHAT_SIGNATURE_TYPE,
    }


def wechat_resource(delivery: Delivery) -> dict[str, Any]:
    """The decrypted resource of a WeChat delivery (AEAD_AES_256_GCM under the APIv3 key)."""
    sealed = json.loads(delivery.body)["resource"]
    key = payment_sandbox().keys.wechat.apiv3_key.encode()
    plain = AESGCM(key).decrypt(
        sealed["nonce"].encode(),
        base64.b64decode(sealed["ciphertext"]),
        sealed["associated_data"].encode(),
    )
    return json.loads(plain)


def wechat_body(delivery: Delivery, resource: dict[str, Any]) -> str:
    """The delivery's body with `resource` encrypted in place of its own, as WeChat would send it."""
    data = json.loads(delivery.body)
    sealed = data["resource"]
    nonce = secrets.token_hex(6)
    ciphertext = AESGCM(payment_sandbox().keys.wechat.apiv3_key.encode()).encrypt(
        nonce.encode(),
        json.dumps(resource, ensure_ascii=False).encode(),
        sealed["associated_data"].encode(),
    )
    sealed.update(nonce=nonce, ciphertext=base64.b64encode(ciphertext).decode())
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def alipay_signer() -> AliPay:
    """python-alipay-sdk playing Alipay's side: it signs with the sandbox's Alipay private key."""
    keys = payment_sandbox().keys.alipay
    return AliPay(
        appid=keys.app_id,
        app_private_key_string=keys.alipay_private_key,
        alipay_public_key_string=keys.alipay_public_key,
        sign_type="RSA2",
    )


def alipay_params(delivery: Delivery) -> dict[str, str]:
    """The form of an Alipay delivery as sent now, without sign and sign_type."""
    _url, _headers, body = delivery.signed()
    params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    params.pop("sign")
    params.pop("sign_type")
    return params


def alipay_form(params: dict[str, str]) -> bytes:
    """`params` signed with the SDK's own sign_data (RSA2 over the sorted k=v pairs), as a form."""
    return (alipay_signer().sign_data(dict(params)) + "&sign_type=RSA2").encode()


def alipay_time(moment: dt.datetime) -> str:
    return clock.local(moment).strftime("%Y-%m-%d %H:%M:%S")


def post_wechat(delivery: Delivery, body: str, headers: dict[str, str]) -> tuple[int, bytes]:
    return client_send(delivery.url, headers, body.encode())


def post_alipay(delivery: Delivery, body: bytes) -> tuple[int, bytes]:
    return client_send(
        delivery.url, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, body
    )


# --- provider calls that fail on demand -----------------------------------------------------------


class _Faulty(FaultyProvider):
    """One merchant's adapter with the faults and scripted answers of a shared `ProviderFaults`."""

    def __init__(self, inner, faults: ProviderFaults) -> None:
        super().__init__(inner)
        self.faults = faults

    def next_fault(self, operation: str) -> str | None:
        return self.faults.queue.next_fault(operation)

    def act(self, operation: str, effect: Callable[[], Any]) -> Any:
        scripted = self.faults.answers.get(operation)
        try:
            result = super().act(operation, scripted or effect)
        except ProviderRefused:
            self.faults.calls.append((operation, "refused"))
            raise
        except ProviderTimeout:
            self.faults.calls.append((operation, "timeout"))
            raise
        self.faults.calls.append((operation, getattr(result, "state", "ok")))
        return result


@dataclass
class ProviderFaults:
    """What the payment services' next provider calls do instead of answering (FaultyProvider's
    "refuse", "timeout", "lost_reply"), whichever merchant's adapter they go through; answers
    replaced outright (`answers[operation] = lambda: …`); and every call with how it ended."""

    queue: FaultQueue
    answers: dict[str, Callable[[], Any]]
    calls: list[tuple[str, str]]

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch) -> ProviderFaults:
        faults = cls(FaultQueue(), {}, [])
        wrap_provider(monkeypatch, lambda inner: _Faulty(inner, faults))
        return faults

    def fail_next(self, operation: str, fault: str, times: int = 1) -> None:
        self.queue.fail_next(operation, fault, times)

    def clear(self) -> None:
        """The provider behaves again (the merchant account was topped up, the network is back)."""
        self.queue.clear_faults()
        self.answers.clear()


def drain_gateway_faults(gateway: SandboxGateway | None = None) -> list[tuple[str, str]]:
    """Take every fault still queued at the sandbox gateway (so none leaks into the next test);
    returns what was left."""
    from guahao.payments.sandbox import OPERATIONS

    gateway = gateway or payment_sandbox()
    left = []
    for operation in sorted(OPERATIONS):
        while (fault := gateway.take_fault(operation)) is not None:
            left.append((operation, fault[0]))
    return left
