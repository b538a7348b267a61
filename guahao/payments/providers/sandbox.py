"""A sandbox payment provider that behaves like WeChat Pay v3, so every path of guahao's payment code
runs against a provider with its own ledger, its own cashier page and asynchronous, signed,
re-sent notifications.

What stays as in WeChat Pay v3: merchant order numbers (out_trade_no, out_refund_no) as the
idempotency keys; trade states NOTPAY / SUCCESS / CLOSED; closing a paid order is refused; refunds
answer PROCESSING and finish later with a REFUND.SUCCESS notification; notifications carry
Wechatpay-Timestamp / -Nonce / -Signature / -Serial headers over "timestamp\\nnonce\\nbody\\n" and are
re-sent on WeChat's schedule until the callback answers 2xx.
What differs: the signature is HMAC-SHA256 with settings.SANDBOX_PAY_SECRET (WeChat signs with its
platform RSA key), and the resource is sent in clear (WeChat encrypts it with AES-256-GCM).

The ledger (SandboxTrade, SandboxRefund, SandboxNotification) is the provider's side. guahao's code
learns of a payment only through notifications or query_order, never by reading these tables.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from guahao import clock
from guahao.payments.models import SandboxNotification, SandboxRefund, SandboxTrade
from guahao.payments.providers.base import (
    BadNotification,
    Notification,
    OrderRequest,
    PayParams,
    ProviderRefused,
    RefundStatus,
    TradeStatus,
)
from guahao.payments.providers.replay import check_timestamp, remember_nonce

log = logging.getLogger("guahao.payments.sandbox")

NAME = "sandbox"
# Stands for the serial number of WeChat's platform certificate (header Wechatpay-Serial).
SERIAL = "5A4D8E2C7B1F09SANDBOX0001"
TRANSACTION_SUCCESS = "TRANSACTION.SUCCESS"
REFUND_SUCCESS = "REFUND.SUCCESS"
# How long after a refund request the bank "finishes" it and the REFUND.SUCCESS notification is due.
# Even at 0 the refund is asynchronous: it answers PROCESSING and succeeds only when the notification
# is delivered (by the worker). Raise it to watch 退费中 in development.
REFUND_DELAY = dt.timedelta(seconds=0)
# Intervals between re-sends after a failed delivery (WeChat Pay v3: 15 retries over 24h4m).
RETRY_SCHEDULE: tuple[dt.timedelta, ...] = tuple(
    dt.timedelta(seconds=s)
    for s in (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600)
)
# A claimed notification is not offered to another worker for this long (a send times out in 5 s).
CLAIM_LEASE = dt.timedelta(seconds=60)
SEND_TIMEOUT_SECONDS = 5

_OUT_NO_RE = re.compile(r"[A-Za-z0-9_\-|*]{6,32}")
_OUT_REFUND_NO_RE = re.compile(r"[A-Za-z0-9_\-|*@]{1,64}")

Sender = Callable[[str, dict[str, str], bytes], int]


class TradeNotFound(ProviderRefused):
    """ORDER_NOT_EXIST"""


class TradeClosed(ProviderRefused):
    """ORDER_CLOSED: a closed order cannot be paid."""


@dataclass(frozen=True)
class CashierTrade:
    """What the sandbox cashier page shows."""

    out_trade_no: str
    amount_fen: int
    description: str
    state: str


class SandboxProvider:
    name = NAME

    def create_order(self, request: OrderRequest) -> PayParams:
        if not _OUT_NO_RE.fullmatch(request.out_trade_no):
            raise ProviderRefused("PARAM_ERROR: out_trade_no must be 6–32 letters, digits or _-|*")
        if request.amount_fen <= 0:
            raise ProviderRefused("PARAM_ERROR: amount.total must be positive")
        with transaction.atomic():
            trade, created = SandboxTrade.objects.get_or_create(
                out_trade_no=request.out_trade_no,
                defaults={
                    "transaction_id": _new_number("4200", 16),
                    "amount_fen": request.amount_fen,
                    "description": request.description[:127],
                    "notify_url": request.notify_url,
                    "state": SandboxTrade.State.NOTPAY,
                    "created_at": clock.now(),
                    "expires_at": request.expires_at,
                },
            )
        if not created:
            # Same order number again: the same order if nothing changed, as WeChat answers.
            if trade.amount_fen != request.amount_fen:
                raise ProviderRefused("INVALID_REQUEST: out_trade_no already used with another amount")
            if trade.state == SandboxTrade.State.SUCCESS:
                raise ProviderRefused("ORDERPAID: order already paid")
            if trade.state == SandboxTrade.State.CLOSED:
                raise TradeClosed("ORDER_CLOSED: order already closed")
        return PayParams(
            out_trade_no=trade.out_trade_no,
            pay_url=f"{settings.PUBLIC_URL}/sandbox/pay/{trade.out_trade_no}",
            params={
                "prepay_id": "wx" + _digest(f"prepay:{trade.transaction_id}")[:30],
                "amount_fen": trade.amount_fen,
            },
        )

    def query_order(self, out_trade_no: str) -> TradeStatus:
        return _status(_close_if_expired(_trade(out_trade_no)))

    def close_order(self, out_trade_no: str) -> None:
        """Closing a closed or never-created order is fine; closing a paid one is refused."""
        with transaction.atomic():
            closed = SandboxTrade.objects.filter(
                out_trade_no=out_trade_no, state=SandboxTrade.State.NOTPAY
            ).update(state=SandboxTrade.State.CLOSED)
        if closed:
            return
        trade = SandboxTrade.objects.filter(out_trade_no=out_trade_no).first()
        if trade is not None and trade.state == SandboxTrade.State.SUCCESS:
            raise ProviderRefused("ORDERPAID: order already paid, cannot close")

    def refund(
        self, *, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundStatus:
        if not _OUT_REFUND_NO_RE.fullmatch(out_refund_no):
            raise ProviderRefused("PARAM_ERROR: bad out_refund_no")
        if amount_fen <= 0:
            raise ProviderRefused("PARAM_ERROR: amount.refund must be positive")
        with transaction.atomic():
            # Lock the trade so two refunds of one trade are checked one after the other (SQLite
            # serialises writers anyway).
            trade = SandboxTrade.objects.select_for_update().filter(out_trade_no=out_trade_no).first()
            if trade is None:
                raise TradeNotFound("ORDER_NOT_EXIST: no such order")
            existing = SandboxRefund.objects.filter(out_refund_no=out_refund_no).first()
            if existing is not None:
                if existing.trade_id != trade.id or existing.amount_fen != amount_fen:
                    raise ProviderRefused("INVALID_REQUEST: out_refund_no already used for another refund")
                return _refund_status(existing)
            if trade.state != SandboxTrade.State.SUCCESS:
                raise ProviderRefused("TRADE_NOT_PAID: order is not paid")
            if total_fen != trade.amount_fen:
                raise ProviderRefused("INVALID_REQUEST: amount.total does not match the order")
            refunded = trade.refunds.aggregate(total=Sum("amount_fen"))["total"] or 0
            if refunded + amount_fen > trade.amount_fen:
                raise ProviderRefused("NOT_ENOUGH: refund exceeds the refundable amount")
            now = clock.now()
            refund = SandboxRefund.objects.create(
                trade=trade,
                out_refund_no=out_refund_no,
                refund_id=_new_number("50", 19),
                amount_fen=amount_fen,
                state=SandboxRefund.State.PROCESSING,
                created_at=now,
            )
            due = now + REFUND_DELAY
            _queue(
                kind=REFUND_SUCCESS,
                trade=trade,
                refund=refund,
                due=due,
                summary="退款成功",
                resource={
                    "out_trade_no": trade.out_trade_no,
                    "transaction_id": trade.transaction_id,
                    "out_refund_no": refund.out_refund_no,
                    "refund_id": refund.refund_id,
                    "refund_status": "SUCCESS",
                    "success_time": _rfc3339(due),
                    "user_received_account": "支付用户零钱",
                    "amount": {
                        "total": trade.amount_fen,
                        "refund": amount_fen,
                        "payer_total": trade.amount_fen,
                        "payer_refund": amount_fen,
                    },
                },
            )
        log.info("sandbox refund accepted", extra={"out_refund_no": out_refund_no, "reason": reason[:80]})
        return _refund_status(refund)

    def query_refund(self, out_refund_no: str) -> RefundStatus:
        refund = SandboxRefund.objects.filter(out_refund_no=out_refund_no).first()
        if refund is None:
            raise ProviderRefused("RESOURCE_NOT_EXISTS: no such refund")
        if refund.state == SandboxRefund.State.PROCESSING and refund.created_at + REFUND_DELAY <= clock.now():
            # The bank finishes a refund on its own time, whether or not the notification arrives.
            _finish_refund(refund)
            refund.refresh_from_db()
        return _refund_status(refund)

    def parse_notification(self, *, headers: dict[str, str], body: bytes) -> Notification:
        lower = {k.lower(): v for k, v in headers.items()}
        timestamp = lower.get("wechatpay-timestamp", "")
        nonce = lower.get("wechatpay-nonce", "")
        signature = lower.get("wechatpay-signature", "")
        if not (timestamp and nonce and signature):
            raise BadNotification("missing Wechatpay-* headers")
        if lower.get("wechatpay-serial", "") != SERIAL:
            raise BadNotification("unknown Wechatpay-Serial")
        expected = _signature(timestamp, nonce, body)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise BadNotification("signature does not match")
        check_timestamp(timestamp)
        remember_nonce(provider=NAME, nonce=nonce)
        return _notification_from(body)


# --- the cashier page (the provider's own site) ----------------------------------------------------


def cashier_trade(out_trade_no: str) -> CashierTrade | None:
    trade = SandboxTrade.objects.filter(out_trade_no=out_trade_no).first()
    if trade is None:
        return None
    return CashierTrade(trade.out_trade_no, trade.amount_fen, trade.description, trade.state)


def pay(out_trade_no: str, *, succeed: bool = True) -> TradeStatus:
    """The patient pays on the cashier page. Success moves NOTPAY → SUCCESS once and queues one
    TRANSACTION.SUCCESS notification; a simulated failure (a declined card) changes nothing, so
    the patient may try again. Raises TradeNotFound, or TradeClosed for a closed order."""
    _close_if_expired(_trade(out_trade_no))  # committed on its own: a refusal below must not undo it
    with transaction.atomic():
        trade = _trade(out_trade_no)
        if trade.state == SandboxTrade.State.CLOSED:
            raise TradeClosed("ORDER_CLOSED: order already closed")
        if not succeed or trade.state == SandboxTrade.State.SUCCESS:
            return _status(trade)
        now = clock.now()
        won = SandboxTrade.objects.filter(id=trade.id, state=SandboxTrade.State.NOTPAY).update(
            state=SandboxTrade.State.SUCCESS, paid_at=now
        )
        trade.refresh_from_db()
        if won:
            _queue(
                kind=TRANSACTION_SUCCESS,
                trade=trade,
                refund=None,
                due=now,
                summary="支付成功",
                resource={
                    "out_trade_no": trade.out_trade_no,
                    "transaction_id": trade.transaction_id,
                    "trade_type": "JSAPI",
                    "trade_state": "SUCCESS",
                    "trade_state_desc": "支付成功",
                    "success_time": _rfc3339(now),
                    "amount": {
                        "total": trade.amount_fen,
                        "payer_total": trade.amount_fen,
                        "currency": "CNY",
                        "payer_currency": "CNY",
                    },
                },
            )
    return _status(trade)


# --- notifications ------------------------------------------------------------------------------


def signed_headers(body: bytes, *, timestamp: str | None = None, nonce: str | None = None) -> dict[str, str]:
    """Headers for one delivery of `body`: a fresh timestamp and nonce unless given."""
    timestamp = timestamp or str(int(clock.now().timestamp()))
    nonce = nonce or secrets.token_hex(16).upper()
    return {
        "Content-Type": "application/json",
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": _signature(timestamp, nonce, body),
        "Wechatpay-Serial": SERIAL,
        "Wechatpay-Signature-Type": "WECHATPAY2-SANDBOX-HMAC-SHA256",
    }


def signed_delivery(notification: SandboxNotification) -> tuple[str, dict[str, str], bytes]:
    """One delivery of a queued notification, signed afresh: (url, headers, body), as send() takes
    them. Every call has a new nonce, as a provider's re-send has."""
    body = notification.body.encode()
    return notification.url, signed_headers(body), body


def deliver_due_notifications(*, send: Sender, limit: int = 100) -> int:
    """Send every due, undelivered notification once, signed afresh. A 2xx answer delivers it; any
    other answer, or a send that raises, schedules the next attempt on WeChat's schedule, and after
    the last one the sandbox gives up. Each notification is claimed with a conditional UPDATE, so
    concurrent workers never send the same one at once. Returns how many were delivered."""
    moment = clock.now()
    due_ids = list(
        SandboxNotification.objects.filter(
            delivered_at__isnull=True, given_up_at__isnull=True, next_attempt_at__lte=moment
        )
        .order_by("next_attempt_at", "id")
        .values_list("id", flat=True)[:limit]
    )
    delivered = 0
    for notification_id in due_ids:
        with transaction.atomic():
            won = SandboxNotification.objects.filter(
                id=notification_id,
                delivered_at__isnull=True,
                given_up_at__isnull=True,
                next_attempt_at__lte=moment,
            ).update(next_attempt_at=moment + CLAIM_LEASE)
        if won and _deliver(SandboxNotification.objects.get(id=notification_id), send):
            delivered += 1
    return delivered


def http_send(url: str, headers: dict[str, str], body: bytes) -> int:
    """POST a notification the way the provider does; returns the HTTP status. Connection errors
    and timeouts raise (the caller counts them as a failed attempt)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_SECONDS) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _finish_refund(refund: SandboxRefund) -> None:
    SandboxRefund.objects.filter(id=refund.id, state=SandboxRefund.State.PROCESSING).update(
        state=SandboxRefund.State.SUCCESS, succeeded_at=clock.now()
    )


def _close_if_expired(trade: SandboxTrade) -> SandboxTrade:
    """An unpaid order past its time_expire is closed, as the provider closes it by itself."""
    if trade.state == SandboxTrade.State.NOTPAY and trade.expires_at is not None and trade.expires_at <= clock.now():
        SandboxTrade.objects.filter(id=trade.id, state=SandboxTrade.State.NOTPAY).update(
            state=SandboxTrade.State.CLOSED
        )
        trade.refresh_from_db()
    return trade


def _deliver(notification: SandboxNotification, send: Sender) -> bool:
    if notification.refund is not None:
        # The bank has finished the refund by the time its notification goes out.
        _finish_refund(notification.refund)
    status: int | None
    try:
        status = send(*signed_delivery(notification))
    except OSError as exc:  # refused, unreachable, timed out: a failed attempt, retried on schedule
        log.warning(
            "sandbox notification send failed",
            extra={"notification_id": notification.id, "error": f"{type(exc).__name__}: {exc}"},
        )
        status = None
    except Exception:  # anything else is a failed attempt too, but worth its traceback
        log.warning("sandbox notification send failed", extra={"notification_id": notification.id}, exc_info=True)
        status = None
    attempts = notification.attempts + 1
    now = clock.now()
    if status is not None and 200 <= status < 300:
        SandboxNotification.objects.filter(id=notification.id).update(
            attempts=attempts, delivered_at=now, last_status=status
        )
        return True
    if attempts > len(RETRY_SCHEDULE):
        SandboxNotification.objects.filter(id=notification.id).update(
            attempts=attempts, last_status=status, given_up_at=now
        )
        log.error("sandbox notification given up", extra={"notification_id": notification.id})
    else:
        SandboxNotification.objects.filter(id=notification.id).update(
            attempts=attempts, last_status=status, next_attempt_at=now + RETRY_SCHEDULE[attempts - 1]
        )
    return False


def _queue(
    *,
    kind: str,
    trade: SandboxTrade,
    refund: SandboxRefund | None,
    due: dt.datetime,
    summary: str,
    resource: dict,
) -> SandboxNotification:
    body = {
        "id": str(uuid.uuid4()),
        "create_time": _rfc3339(due),
        "resource_type": "plain-resource",
        "event_type": kind,
        "summary": summary,
        "resource": resource,
    }
    return SandboxNotification.objects.create(
        kind=kind,
        url=trade.notify_url,
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        next_attempt_at=due,
        trade=trade,
        refund=refund,
    )


def _notification_from(body: bytes) -> Notification:
    try:
        event = json.loads(body)
        kind = event["event_type"]
        resource = event["resource"]
        if kind == TRANSACTION_SUCCESS and resource["trade_state"] == "SUCCESS":
            return Notification(
                kind="trade",
                out_trade_no=str(resource["out_trade_no"]),
                amount_fen=int(resource["amount"]["total"]),
                transaction_id=str(resource["transaction_id"]),
            )
        if kind == REFUND_SUCCESS and resource["refund_status"] == "SUCCESS":
            return Notification(
                kind="refund",
                out_trade_no=str(resource["out_trade_no"]),
                amount_fen=int(resource["amount"]["refund"]),
                transaction_id=str(resource["transaction_id"]),
                out_refund_no=str(resource["out_refund_no"]),
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise BadNotification("malformed notification body") from exc
    raise BadNotification(f"unsupported event {kind!r}")


def _trade(out_trade_no: str) -> SandboxTrade:
    trade = SandboxTrade.objects.filter(out_trade_no=out_trade_no).first()
    if trade is None:
        raise TradeNotFound("ORDER_NOT_EXIST: no such order")
    return trade


def _status(trade: SandboxTrade) -> TradeStatus:
    return TradeStatus(trade.out_trade_no, trade.state, trade.amount_fen, trade.transaction_id)


def _refund_status(refund: SandboxRefund) -> RefundStatus:
    return RefundStatus(refund.out_refund_no, refund.state, refund.amount_fen)


def _signature(timestamp: str, nonce: str, body: bytes) -> str:
    message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
    mac = hmac.new(settings.SANDBOX_PAY_SECRET.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def _digest(text: str) -> str:
    return hashlib.sha256(f"{settings.SANDBOX_PAY_SECRET}:{text}".encode()).hexdigest()


def _new_number(prefix: str, random_digits: int) -> str:
    """WeChat-like numbers: prefix, the local date, random digits ("4200" + 8 + 16 = 28 digits)."""
    stamp = clock.local_now().strftime("%Y%m%d")
    return prefix + stamp + "".join(secrets.choice("0123456789") for _ in range(random_digits))


def _rfc3339(moment: dt.datetime) -> str:
    return clock.local(moment).isoformat(timespec="seconds")
