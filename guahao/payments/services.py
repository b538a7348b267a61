"""Writes of payments and refunds. Calls to a provider happen outside our transactions; what we learn
from a provider (a notification, a query answer) is written with conditional UPDATEs, so a repeated
or concurrent answer changes state once and writes one outbox event.

Every paid payment ends as a Registration or a Refund: "payment.paid" tells booking to decide which,
"refund.requested" tells the worker to submit a refund, "refund.succeeded" to finish it."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest

from guahao import clock
from guahao.errors import Conflict, InvalidInput, NotFound, UpstreamUnavailable
from guahao.notifications.services import emit
from guahao.payments import selectors
from guahao.payments.models import Payment, Refund
from guahao.payments.providers import (
    NoMerchant,
    for_merchant,
    for_payment,
    merchant_by_key,
    merchant_for,
)
from guahao.payments.providers.base import (
    BadNotification,
    MismatchedNotification,
    Notification,
    OrderRequest,
    PayParams,
    ProviderRefused,
    ProviderTimeout,
    RefundStatus,
)
from guahao.payments.providers.replay import prune_seen_nonces

if TYPE_CHECKING:
    from guahao.booking.models import Hold

__all__ = [
    "NoMerchant",
    "RecordedNotification",
    "close_open_orders",
    "close_payment",
    "mark_refund_manual",
    "poll_open_payments",
    "poll_processing_refunds",
    "record_notification",
    "refresh_payment",
    "request_refund",
    "retry_refund",
    "start_payment",
    "submit_refund",
]

log = logging.getLogger("guahao.payments")

PROVIDER_UNAVAILABLE = "支付渠道暂时无法响应，请稍后重试"
# A provider order may be paid until the hold's expiry plus this (time_expire); a payment landing
# after the hold lapsed is refunded.
ORDER_MARGIN = dt.timedelta(minutes=2)
# An order whose opening has not answered after this is treated as abandoned by its request.
OPENING_TIMEOUT = dt.timedelta(seconds=30)
# The pollers ask the provider this long after an order opened or a refund was requested, then
# back off (doubling) up to the maximum.
FIRST_POLL = dt.timedelta(minutes=1)
MAX_POLL_INTERVAL = dt.timedelta(minutes=2)
FINAL_POLL_INTERVAL = dt.timedelta(seconds=30)
FINAL_POLL_LEAD = dt.timedelta(seconds=5)
MAX_REFUND_QUERY_INTERVAL = dt.timedelta(hours=1)


class RefundExceedsPayment(RuntimeError):
    """Our books would show more refunded than paid: never expected; rolls the notification back."""


@dataclass(frozen=True)
class RecordedNotification:
    kind: str  # "trade" or "refund"
    payment_id: int
    refund_id: int | None
    newly_settled: bool  # this notification changed state (False for a repeat)


def start_payment(*, hold: Hold) -> tuple[Payment, PayParams]:
    """Open a new payment order for `hold` at the configured provider and return what the patient's
    client needs to pay it. Earlier open orders of the hold are closed first, so a failed payment may
    be retried with a new order number; at most one order of a hold is open at any time (a partial
    unique index), and an order still being opened by another request is never closed under it.
    The order carries an expiry (the hold's plus ORDER_MARGIN), after which the provider refuses
    the money. Raises UpstreamUnavailable when the provider does not answer or refuses (no
    automatic retry), and Conflict when an earlier order turns out to be paid already (that payment
    is settled here; booking completes it from the "payment.paid" event) or is still being opened."""
    if hold.fee_fen <= 0:
        raise InvalidInput("本次挂号无需支付", code="nothing_to_pay")
    if not hold.channel:
        raise InvalidInput("请先选择支付方式", code="channel_required")
    try:
        merchant = merchant_for(hospital_id=hold.session.hospital_id, channel=hold.channel)
    except NoMerchant as exc:
        log.warning("no merchant account for a channel", extra={"hold_id": hold.id, "error": str(exc)})
        raise Conflict("该支付方式暂不可用，请选择其他支付方式", code="channel_unavailable") from exc
    close_open_orders(hold_id=hold.id)

    gateway = for_merchant(merchant)
    now = clock.now()
    try:
        with transaction.atomic():
            payment = Payment.objects.create(
                hold=hold,
                account_id=hold.account_id,
                provider=merchant.provider,
                merchant_key=merchant.key,
                channel=hold.channel,
                insurance=hold.insurance,
                out_trade_no=_new_out_trade_no(),
                amount_fen=hold.fee_fen,
                state=Payment.State.CREATED,
                created_at=now,
                expires_at=hold.expires_at + ORDER_MARGIN,
                # If this request dies before the provider answers, the poller still finds the order.
                next_poll_at=now + OPENING_TIMEOUT,
            )
    except IntegrityError as exc:  # another request opened one in the meantime
        raise _order_in_progress() from exc
    order = OrderRequest(
        out_trade_no=payment.out_trade_no,
        amount_fen=payment.amount_fen,
        description=_description(hold),
        channel=payment.channel,
        notify_url=merchant.notify_url,
        expires_at=payment.expires_at,
        return_url=_return_url(hold),
    )
    try:
        params = gateway.create_order(order)
    except ProviderRefused as exc:
        # The provider has no such order: nothing can be paid on it.
        Payment.objects.filter(id=payment.id, state=Payment.State.CREATED).update(state=Payment.State.CLOSED)
        log.warning("payment order refused", extra={"out_trade_no": payment.out_trade_no, "error": str(exc)})
        raise UpstreamUnavailable(PROVIDER_UNAVAILABLE, code="payment_unavailable") from exc
    except ProviderTimeout as exc:
        # The order may exist at the provider: it stays CREATED, and the poller asks about it once
        # OPENING_TIMEOUT has passed (closing it if unpaid).
        log.warning("payment order timed out", extra={"out_trade_no": payment.out_trade_no})
        raise UpstreamUnavailable(PROVIDER_UNAVAILABLE, code="payment_unavailable") from exc
    opened = clock.now()
    Payment.objects.filter(id=payment.id, state=Payment.State.CREATED).update(
        opened_at=opened, next_poll_at=opened + FIRST_POLL
    )
    log.info("payment order created", extra={"payment_id": payment.id, "out_trade_no": payment.out_trade_no})
    return payment, params


def close_open_orders(*, hold_id: int) -> None:
    """Close every open order of a hold (a new order replaces them, or the hold is over). Raises
    Conflict when one turns out to be paid (it is settled here) or is still being opened by another
    request, and UpstreamUnavailable when the provider does not answer: the caller tries again."""
    already_paid = False
    now = clock.now()
    for earlier in Payment.objects.filter(hold_id=hold_id, state=Payment.State.CREATED).order_by("id"):
        if earlier.opened_at is None and earlier.created_at > now - OPENING_TIMEOUT:
            raise _order_in_progress()
        if not _close_or_settle(earlier):
            already_paid = True
    if already_paid:
        raise Conflict("您已完成支付，正在为您办理挂号，请稍后刷新查看", code="payment_already_paid")


def _order_in_progress() -> Conflict:
    return Conflict("支付订单正在创建，请稍候几秒后再试", code="payment_in_progress")


def close_payment(*, payment_id: int) -> None:
    """Close an unpaid order (the hold is over, or a new order replaces it). Idempotent. An order the
    provider says is paid is settled instead (booking then refunds it). Raises UpstreamUnavailable
    when the provider does not answer; the caller (an outbox job or the poller) tries again later."""
    payment = Payment.objects.get(id=payment_id)
    if payment.state == Payment.State.CREATED:
        _close_or_settle(payment)


def poll_open_payments(*, limit: int = 100) -> int:
    """The poller for lost notifications: ask the provider about every open order that is due
    (a minute after it opened, then with back-off, until its expiry). A paid one is settled exactly
    as a notification would settle it; one past its expiry is closed; an order whose opening never
    answered is asked about once OPENING_TIMEOUT has passed. Returns how many were asked."""
    now = clock.now()
    due = list(
        Payment.objects.filter(state=Payment.State.CREATED, next_poll_at__lte=now).order_by("next_poll_at")[:limit]
    )
    for payment in due:
        try:
            if payment.expires_at <= now or payment.opened_at is None:
                _close_or_settle(payment)
                continue
            if refresh_payment(payment_id=payment.id):
                continue
        except UpstreamUnavailable:
            log.warning("payment poll: provider did not answer", extra={"payment_id": payment.id})
        polls = payment.polls + 1
        Payment.objects.filter(id=payment.id, state=Payment.State.CREATED).update(
            polls=polls, next_poll_at=_next_poll(payment, now=now, polls=polls)
        )
    return len(due)


def _next_poll(payment: Payment, *, now: dt.datetime, polls: int) -> dt.datetime:
    """Back off while the hold has time left, but ask every FINAL_POLL_INTERVAL in its last minutes
    and once just before it lapses, so money paid late in the lock still buys the registration;
    after that, ask again when the order expires (and close it)."""
    hold_expires_at = payment.expires_at - ORDER_MARGIN
    wait = min(FIRST_POLL * 2 ** (polls - 1), MAX_POLL_INTERVAL)
    if now < hold_expires_at - FINAL_POLL_LEAD:
        if hold_expires_at - now <= 2 * MAX_POLL_INTERVAL:
            wait = min(wait, FINAL_POLL_INTERVAL)
        return min(now + wait, hold_expires_at - FINAL_POLL_LEAD)
    if now < payment.expires_at:
        return payment.expires_at
    return now + FIRST_POLL  # past the order's expiry and not closed yet: try again


def refresh_payment(*, payment_id: int) -> bool:
    """Ask the provider about an open order and settle it if paid (for a lost notification or the
    patient's "我已支付" button). Returns True when this call settled it."""
    payment = Payment.objects.get(id=payment_id)
    if payment.state == Payment.State.PAID:
        return False
    try:
        status = for_payment(payment).query_order(payment.out_trade_no)
    except (ProviderTimeout, ProviderRefused) as exc:
        raise UpstreamUnavailable(PROVIDER_UNAVAILABLE, code="payment_unavailable") from exc
    if status.state == "CLOSED":
        Payment.objects.filter(id=payment.id, state=Payment.State.CREATED).update(state=Payment.State.CLOSED)
    if status.state != "SUCCESS":
        return False
    return _settle_from_query(
        payment, amount_fen=status.amount_fen, transaction_id=status.transaction_id, paid_at=status.paid_at
    )


def record_notification(*, provider_name: str, merchant_key: str, headers: dict[str, str], body: bytes) -> RecordedNotification:
    """Verify a provider's notification to one merchant and record what it says, in one transaction:
    a paid trade moves its payment to PAID and writes "payment.paid"; a finished refund moves the
    refund to SUCCEEDED, adds to the payment's refunded amount and writes "refund.succeeded".
    Repeated and concurrent deliveries change state once. Raises NoMerchant (no such merchant, or
    the sandbox outside development), BadNotification (bad signature, stale, replayed, unknown
    order) and MismatchedNotification (signed, but another app, merchant or amount: nothing is paid
    and a "payment.alert" event is raised). Nothing is written before the signature checks out."""
    gateway = for_merchant(merchant_by_key(provider_name, merchant_key))
    try:
        with transaction.atomic():
            note = gateway.parse_notification(headers=headers, body=body)
            if note.kind == "trade":
                recorded = _record_trade_paid(provider_name=provider_name, merchant_key=merchant_key, note=note)
            elif note.kind == "refund":
                recorded = _record_refund_news(provider_name=provider_name, note=note)
            else:
                recorded = RecordedNotification(kind="ignored", payment_id=0, refund_id=None, newly_settled=False)
    except MismatchedNotification as exc:
        _raise_alert(provider_name=provider_name, merchant_key=merchant_key, reason=str(exc))
        raise
    # Outside the recording transaction, so concurrent notifications do not hold each other's row
    # locks, and only for a verified one, so unsigned junk cannot make us write.
    prune_seen_nonces()
    return recorded


def _raise_alert(*, provider_name: str, merchant_key: str, reason: str) -> None:
    """A notification signed by the provider that does not match our order or merchant: money may
    be somewhere we do not expect. Logged as an error and kept as an event for the operators."""
    log.error(
        "payment notification does not match; not paid, an operator must check it",
        extra={"provider": provider_name, "merchant_key": merchant_key, "reason": reason},
    )
    with transaction.atomic():
        emit("payment.alert", provider=provider_name, merchant_key=merchant_key, reason=reason[:200])


def request_refund(*, payment: Payment, amount_fen: int, reason: str, refund_no: str) -> Refund:
    """Start a refund of a paid payment: a PROCESSING Refund and a "refund.requested" event (the
    worker then calls submit_refund). Idempotent by refund_no: the same number returns the same
    refund. Refuses more than remains refundable, counting refunds in progress. Meant to run inside
    the caller's transaction (it nests as a savepoint)."""
    with transaction.atomic():
        # Lock the payment row so two refunds of one payment are checked one after the other
        # (PostgreSQL; SQLite serialises writing transactions anyway).
        locked = Payment.objects.select_for_update().get(id=payment.id)
        existing = Refund.objects.filter(refund_no=refund_no).first()
        if existing is not None:
            if existing.payment_id != locked.id or existing.amount_fen != amount_fen:
                raise Conflict("退款单号已用于另一笔退款", code="refund_no_conflict")
            return existing
        if amount_fen <= 0:
            raise InvalidInput("退款金额必须大于零", code="invalid_refund_amount")
        if locked.state != Payment.State.PAID:
            raise Conflict("订单尚未支付，无法退款", code="payment_not_paid")
        if amount_fen > selectors.refundable_fen(locked):
            raise Conflict("退款金额超过可退金额", code="refund_exceeds_paid")
        refund = Refund.objects.create(
            payment=locked,
            refund_no=refund_no,
            amount_fen=amount_fen,
            reason=reason[:100],
            state=Refund.State.PROCESSING,
            created_at=clock.now(),
            next_query_at=clock.now() + FIRST_POLL,
        )
        emit("refund.requested", refund_id=refund.id, payment_id=locked.id)
    log.info("refund requested", extra={"refund_id": refund.id, "payment_id": locked.id, "amount_fen": amount_fen})
    return refund


def submit_refund(*, refund_id: int) -> None:
    """Send a PROCESSING refund to the provider (idempotent there by refund_no, so the worker may
    call this again). Its notification settles it later. ProviderTimeout propagates and leaves the
    refund PROCESSING, so the worker backs off and retries; a refusal marks it FAILED and writes
    "refund.failed" for the operators."""
    refund = Refund.objects.select_related("payment").get(id=refund_id)
    if refund.state != Refund.State.PROCESSING:
        return
    payment = refund.payment
    try:
        answer = for_payment(payment).refund(
            out_trade_no=payment.out_trade_no,
            out_refund_no=refund.refund_no,
            amount_fen=refund.amount_fen,
            total_fen=payment.amount_fen,
            reason=refund.reason,
        )
    except ProviderTimeout:
        log.warning("refund submit timed out; retried later", extra={"refund_id": refund.id})
        raise
    except ProviderRefused as exc:
        _fail_refund(refund, error=str(exc))
        return
    log.info("refund submitted", extra={"refund_id": refund.id, "provider_state": answer.state})
    if answer.state == "SUCCESS" and answer.amount_fen == refund.amount_fen:
        # Alipay refunds synchronously: settled now, as its notification would.
        with transaction.atomic():
            _settle_refund(refund_id=refund.id, succeeded_at=answer.succeeded_at)
    elif answer.state == "ABNORMAL":
        _fail_refund(refund, error="ABNORMAL: the bank rejected the refund")


def poll_processing_refunds(*, limit: int = 100) -> int:
    """The poller for lost refund notifications: ask the provider about every PROCESSING refund that
    is due (a minute after it was requested, then with back-off). SUCCESS settles it exactly as the
    notification would; a refund the provider never received is submitted again (same number);
    ABNORMAL fails it for the operators. Returns how many were asked."""
    now = clock.now()
    due = list(
        Refund.objects.select_related("payment")
        .filter(state=Refund.State.PROCESSING, next_query_at__lte=now)
        .order_by("next_query_at")[:limit]
    )
    for refund in due:
        try:
            status = for_payment(refund.payment).query_refund(
                refund.refund_no, out_trade_no=refund.payment.out_trade_no
            )
        except ProviderRefused:
            status = None  # never arrived: send it again below
        except ProviderTimeout:
            status = RefundStatus(refund.refund_no, "PROCESSING", refund.amount_fen)
        if status is not None and status.state == "SUCCESS":
            if status.amount_fen == refund.amount_fen:
                with transaction.atomic():
                    _settle_refund(refund_id=refund.id, succeeded_at=status.succeeded_at)
                continue
            log.error("refund amount differs at the provider", extra={"refund_id": refund.id})
        elif status is not None and status.state == "ABNORMAL":
            _fail_refund(refund, error="ABNORMAL: the bank rejected the refund")
            continue
        elif status is None:
            try:
                submit_refund(refund_id=refund.id)
            except ProviderTimeout:  # asked again at the next query
                log.warning("refund resubmit timed out", extra={"refund_id": refund.id})
        queries = refund.queries + 1
        wait = min(FIRST_POLL * 2 ** (queries - 1), MAX_REFUND_QUERY_INTERVAL)
        Refund.objects.filter(id=refund.id, state=Refund.State.PROCESSING).update(
            queries=queries, next_query_at=now + wait
        )
    return len(due)


def retry_refund(*, refund_no: str) -> Refund:
    """An operator sends a FAILED refund again, with the same refund number (so the provider can
    never pay it twice). Raises NotFound, or Conflict when it is not FAILED."""
    refund = Refund.objects.filter(refund_no=refund_no).first()
    if refund is None:
        raise NotFound("退款单不存在", code="refund_not_found")
    with transaction.atomic():
        moved = Refund.objects.filter(id=refund.id, state=Refund.State.FAILED).update(
            state=Refund.State.PROCESSING, next_query_at=clock.now() + FIRST_POLL, queries=0, last_error=""
        )
        if not moved:
            raise Conflict("只有退款失败的退款单可以重试", code="refund_not_failed")
        emit("refund.requested", refund_id=refund.id, payment_id=refund.payment_id)
    log.info("refund retried by an operator", extra={"refund_id": refund.id})
    try:
        submit_refund(refund_id=refund.id)
    except ProviderTimeout:
        log.warning("refund retry timed out; the worker sends it again", extra={"refund_id": refund.id})
    refund.refresh_from_db()
    return refund


def mark_refund_manual(*, refund_no: str, staff_username: str, note: str, provider_asked: bool = False) -> Refund:
    """Staff paid a FAILED refund back another way (cash at the window, a bank transfer): FAILED →
    MANUAL once, counted in the payment's refunded amount exactly as a succeeded refund (never past
    what was paid), with who did it and why, and a "refund.succeeded" event. Meant to run inside the
    caller's transaction (it nests as a savepoint). Raises InvalidInput without a note, NotFound, or
    Conflict when the refund is not FAILED."""
    note = note.strip()
    if not note:
        raise InvalidInput("请填写退回方式与说明", code="note_required")
    refund = Refund.objects.select_related("payment").filter(refund_no=refund_no).first()
    if refund is None:
        raise NotFound("退款单不存在", code="refund_not_found")
    if not provider_asked:  # a caller inside its own transaction asks first, outside it
        confirm_not_refunded_at_provider(refund_no=refund_no)
    with transaction.atomic():
        # The payment before the refund: the lock order of _settle_refund.
        Payment.objects.select_for_update().filter(id=refund.payment_id).first()
        moved = Refund.objects.filter(id=refund.id, state=Refund.State.FAILED).update(
            state=Refund.State.MANUAL,
            succeeded_at=clock.now(),
            next_query_at=None,
            handled_by=staff_username[:150],
            handled_note=note[:200],
        )
        if not moved:
            raise Conflict("只有退款失败的退款单可以标记为已线下退款", code="refund_not_failed")
        counted = Payment.objects.filter(
            id=refund.payment_id, refunded_fen__lte=F("amount_fen") - refund.amount_fen
        ).update(refunded_fen=F("refunded_fen") + refund.amount_fen)
        if not counted:
            log.error("manual refund would exceed the payment", extra={"refund_id": refund.id})
            raise RefundExceedsPayment(f"refund {refund.id} exceeds payment {refund.payment_id}")
        emit("refund.succeeded", refund_id=refund.id, payment_id=refund.payment_id, manual=True)
    log.info("refund marked as paid back another way", extra={"refund_id": refund.id, "staff": staff_username})
    refund.refresh_from_db()
    return refund


def confirm_not_refunded_at_provider(*, refund_no: str) -> None:
    """Before staff pay a FAILED refund back another way, the provider is asked once more (outside
    any transaction): a refund that succeeded there after all is settled as such, one still in
    progress is waited for, and an answer we cannot get stops the marking (Conflict each time).
    Only a refund the provider never received, or rejected for good (ABNORMAL), may be paid back
    by hand: the patient is never refunded twice."""
    refund = Refund.objects.select_related("payment").filter(refund_no=refund_no).first()
    if refund is None or refund.state != Refund.State.FAILED:
        return  # mark_refund_manual refuses it with the right message
    try:
        status = for_payment(refund.payment).query_refund(refund.refund_no, out_trade_no=refund.payment.out_trade_no)
    except ProviderRefused:
        return  # the provider never had it
    except ProviderTimeout as exc:
        raise Conflict("暂时无法向支付机构确认该退款的状态，请稍后重试", code="refund_status_unknown") from exc
    if status.state == "SUCCESS":
        with transaction.atomic():
            _settle_refund(refund_id=refund.id, succeeded_at=status.succeeded_at)
        raise Conflict("支付机构显示该退款已经成功，已更新为已退款，无需线下退回", code="refund_succeeded_at_provider")
    if status.state != "ABNORMAL":
        raise Conflict("支付机构显示该退款仍在处理中，请稍后再看", code="refund_processing_at_provider")


def _fail_refund(refund: Refund, *, error: str) -> None:
    with transaction.atomic():
        failed = Refund.objects.filter(id=refund.id, state=Refund.State.PROCESSING).update(
            state=Refund.State.FAILED, last_error=error[:200]
        )
        if failed:
            emit("refund.failed", refund_id=refund.id, payment_id=refund.payment_id, error=error[:200])
    log.error(
        "refund refused by provider; an operator must handle it",
        extra={"refund_id": refund.id, "payment_id": refund.payment_id, "error": error},
    )


# --- helpers --------------------------------------------------------------------------------------


def _record_trade_paid(*, provider_name: str, merchant_key: str, note: Notification) -> RecordedNotification:
    payment = Payment.objects.filter(
        out_trade_no=note.out_trade_no, provider=provider_name, merchant_key=merchant_key
    ).first()
    if payment is None:
        raise BadNotification("unknown out_trade_no")
    if note.amount_fen != payment.amount_fen:
        raise MismatchedNotification(
            f"order {payment.out_trade_no}: paid {note.amount_fen} fen, the order is {payment.amount_fen} fen"
        )
    newly = _mark_paid(payment_id=payment.id, transaction_id=note.transaction_id, paid_at=note.paid_at)
    return RecordedNotification(kind="trade", payment_id=payment.id, refund_id=None, newly_settled=newly)


def _record_refund_news(*, provider_name: str, note: Notification) -> RecordedNotification:
    refund = Refund.objects.select_related("payment").filter(refund_no=note.out_refund_no).first()
    if refund is None or refund.payment.out_trade_no != note.out_trade_no or refund.payment.provider != provider_name:
        raise BadNotification("unknown out_refund_no")
    payment = refund.payment
    if note.cumulative:  # Alipay: the trade's refunded total, which includes this refund
        fits = refund.amount_fen <= note.amount_fen <= payment.amount_fen
    else:
        fits = note.amount_fen == refund.amount_fen
    if not fits:
        raise MismatchedNotification(f"refund {refund.refund_no}: {note.amount_fen} fen notified, {refund.amount_fen} asked")
    if note.state != "SUCCESS":
        _fail_refund(refund, error=f"{note.state}: the provider could not pay the refund out")
        return RecordedNotification(kind="refund", payment_id=payment.id, refund_id=refund.id, newly_settled=False)
    newly = _settle_refund(refund_id=refund.id, succeeded_at=note.succeeded_at)
    return RecordedNotification(
        kind="refund", payment_id=refund.payment_id, refund_id=refund.id, newly_settled=bool(newly)
    )


def _settle_refund(*, refund_id: int, succeeded_at: dt.datetime | None = None) -> bool:
    """PROCESSING or FAILED → SUCCEEDED once, adding to the payment's refunded amount, with its
    "refund.succeeded" event; call inside the recording transaction. FAILED too: the provider's word
    on where the money is wins over our earlier reading. Locks the payment before the refund (the
    lock order in docs/operations.md). `succeeded_at` is the provider's moment (its bill's day), as
    for _mark_paid."""
    now = clock.now()
    refund = Refund.objects.get(id=refund_id)
    Payment.objects.select_for_update().filter(id=refund.payment_id).first()
    newly = Refund.objects.filter(
        id=refund.id, state__in=[Refund.State.PROCESSING, Refund.State.FAILED]
    ).update(
        state=Refund.State.SUCCEEDED,
        # The provider states whole seconds: never before we asked, never after now.
        succeeded_at=max(refund.created_at, min(succeeded_at, now)) if succeeded_at is not None else now,
        next_query_at=None,
    )
    if newly:
        counted = Payment.objects.filter(
            id=refund.payment_id, refunded_fen__lte=F("amount_fen") - refund.amount_fen
        ).update(refunded_fen=F("refunded_fen") + refund.amount_fen)
        if not counted:
            log.error("refund would exceed the payment", extra={"refund_id": refund.id})
            raise RefundExceedsPayment(f"refund {refund.id} exceeds payment {refund.payment_id}")
        emit("refund.succeeded", refund_id=refund.id, payment_id=refund.payment_id)
        log.info("refund succeeded", extra={"refund_id": refund.id, "payment_id": refund.payment_id})
    elif (
        Refund.objects.filter(id=refund.id, state=Refund.State.MANUAL)
        .exclude(last_error=Refund.PAID_TWICE)
        .update(last_error=Refund.PAID_TWICE)
    ):
        # Staff paid it back by hand and the provider paid it too: ledger-check names it until
        # finance recovers the money (refund_paid_twice).
        log.error("refund paid back by hand succeeded at the provider too", extra={"refund_id": refund.id})
    return bool(newly)


def _mark_paid(*, payment_id: int, transaction_id: str, paid_at: dt.datetime | None = None) -> bool:
    """CREATED or CLOSED → PAID once (a closed order can still have been paid just before), with its
    "payment.paid" event in the same transaction. `paid_at` is the provider's moment of payment:
    the day its bill lists the trade, which reconciliation compares with ours (we may learn of it
    after midnight); our clock when the provider did not say (never later than now)."""
    now = clock.now()
    with transaction.atomic():
        updated = Payment.objects.filter(
            id=payment_id, state__in=[Payment.State.CREATED, Payment.State.CLOSED]
        ).update(
            state=Payment.State.PAID,
            # The provider states whole seconds: never before the order, never after now.
            paid_at=Greatest(F("created_at"), Value(min(paid_at, now))) if paid_at is not None else now,
            provider_trade_no=transaction_id,
            next_poll_at=None,
        )
        if updated:
            emit("payment.paid", payment_id=payment_id)
    if updated:
        log.info("payment paid", extra={"payment_id": payment_id})
    return bool(updated)


# The providers' "no such order" answers to a query (WeChat Pay v3, Alipay).
ORDER_NOT_FOUND = frozenset({"ORDER_NOT_EXIST", "ORDERNOTEXIST", "RESOURCE_NOT_EXISTS", "ACQ.TRADE_NOT_EXIST"})


def _close_or_settle(payment: Payment) -> bool:
    """Close an open order at its provider and mark it CLOSED; True when it is closed (or at least
    not known to be paid). When the provider refuses because the order is paid, settle it from the
    provider's answer and return False. Raises UpstreamUnavailable when the provider does not answer."""
    gateway = for_payment(payment)
    try:
        gateway.close_order(payment.out_trade_no)
    except ProviderTimeout as exc:
        raise UpstreamUnavailable(PROVIDER_UNAVAILABLE, code="payment_unavailable") from exc
    except ProviderRefused:
        try:
            status = gateway.query_order(payment.out_trade_no)
        except ProviderTimeout as exc:
            raise UpstreamUnavailable(PROVIDER_UNAVAILABLE, code="payment_unavailable") from exc
        except ProviderRefused as exc:
            if exc.code not in ORDER_NOT_FOUND:
                # Refused for another reason: nothing is known, and the close was refused perhaps
                # because it is paid. Marking it closed could leave a paid order unsettled.
                raise UpstreamUnavailable(PROVIDER_UNAVAILABLE, code="payment_unavailable") from exc
            # The provider knows no such order (its opening never arrived): nothing can be paid on
            # it. A notification arriving all the same still settles it (CLOSED → PAID).
            log.warning("order neither closable nor found; marked closed", extra={"payment_id": payment.id})
            Payment.objects.filter(id=payment.id, state=Payment.State.CREATED).update(state=Payment.State.CLOSED)
            return True
        if status.state == "SUCCESS":
            _settle_from_query(
                payment, amount_fen=status.amount_fen, transaction_id=status.transaction_id, paid_at=status.paid_at
            )
            return False
        if status.state != "CLOSED":
            log.warning("provider refused to close an unpaid order", extra={"payment_id": payment.id})
            return True
    Payment.objects.filter(id=payment.id, state=Payment.State.CREATED).update(
        state=Payment.State.CLOSED, next_poll_at=None
    )
    return True


def _settle_from_query(
    payment: Payment, *, amount_fen: int, transaction_id: str, paid_at: dt.datetime | None = None
) -> bool:
    if amount_fen != payment.amount_fen:
        log.error(
            "paid amount differs from the order; an operator must check it",
            extra={"payment_id": payment.id, "expected_fen": payment.amount_fen, "provider_fen": amount_fen},
        )
        return False
    return _mark_paid(payment_id=payment.id, transaction_id=transaction_id, paid_at=paid_at)


def _new_out_trade_no() -> str:
    """GH + local yymmddHHMMSS + 8 random digits: 22 characters, new for every order."""
    return "GH" + clock.local_now().strftime("%y%m%d%H%M%S") + f"{secrets.randbelow(10**8):08d}"


def _return_url(hold: Hold) -> str:
    """The patient's result page, where the provider's cashier sends the browser back."""
    return f"{settings.PUBLIC_URL}/holds/{hold.id}/result"


def _description(hold: Hold) -> str:
    session = hold.session
    return f"{session.hospital.name}-{session.department.name}-挂号费"[:127]
