"""From paid to registered: a paid payment wins its hold's slot (or is refunded), the HIS registers
it, and an HIS that does not answer is asked again until a cutoff, after which the payment is
refunded and the HIS asked to cancel. Never both registered and refunded, never neither."""

from __future__ import annotations

import itertools

from django.db.models import Q

from guahao import clock
from guahao.booking import selectors
from guahao.booking.models import Hold, Registration
from guahao.booking.services.common import his, lock_slot, log, refund_no, submit_refund_now
from guahao.booking.soldout import sold_out
from guahao.booking.states import HoldState, RegistrationStatus, hold_sources
from guahao.db import atomic_retry
from guahao.his.base import HisRefused, HisTimeout, RegisterRequest
from guahao.notifications.services import emit
from guahao.payments import services as payments
from guahao.payments.models import Payment, Refund
from guahao.scheduling.models import Session, Slot
from guahao.scheduling.services import lock_session_status


class _Lost(Exception):
    """The hold's row no longer matched: undo the slot update made before it in this transaction."""


def complete_paid_hold(*, payment_id: int) -> None:
    """A payment is paid: let it win its hold's slot (the hold PAYING and unexpired, still the
    slot's claimant, no other payment won, the session open) and register it, or refund it in full.
    Idempotent: safe to call again for the same payment (inline after the notification or the
    patient's "我已支付", and again from the outbox worker)."""
    payment = Payment.objects.select_related("hold__session__hospital", "hold__slot").get(id=payment_id)
    if payment.state != Payment.State.PAID:
        return
    hold = payment.hold
    if hold.payment_id == payment.id or payment.refunds.exists():
        return  # already decided
    now = clock.now()

    def win() -> bool:
        if lock_session_status(hold.session_id) != Session.Status.OPEN:
            return False  # 停诊 while paying: refund, do not register
        # Slot first (the lock order), on its own row: still claimed by this hold and unexpired.
        booked = Slot.objects.filter(
            id=hold.slot_id, state=Slot.State.HELD, held_until=hold.expires_at, held_until__gt=now
        ).update(state=Slot.State.BOOKED, held_until=None)
        if not booked:
            return False
        won = Hold.objects.filter(
            id=hold.id,
            state__in=hold_sources(HoldState.REGISTERING, HoldState.PAYING),
            expires_at__gt=now,
            payment__isnull=True,
        ).update(state=HoldState.REGISTERING, payment=payment, updated_at=now)
        if not won:
            raise _Lost
        emit("hold.registering", hold_id=hold.id, payment_id=payment.id)
        return True

    try:
        won = atomic_retry(win)
    except _Lost:
        won = False
    if won:
        try:
            register_paid_hold(hold_id=hold.id, ask_first=False)
        except HisTimeout:
            log.warning("his register timed out; the worker asks again", extra={"hold_id": hold.id})
        return
    hold.refresh_from_db()
    if hold.payment_id != payment.id:  # not a concurrent completion of this same payment
        _refund_unused_payment(payment=payment, hold=hold)


def _refund_unused_payment(*, payment: Payment, hold: Hold) -> None:
    if Session.objects.filter(id=hold.session_id, status=Session.Status.SUSPENDED).exists():
        reason = "医生停诊，自动退款"
    elif selectors.effective_state(hold) == HoldState.EXPIRED:
        reason = "锁号已超时，自动退款"
    else:
        reason = "订单已失效，自动退款"
    refund = atomic_retry(
        lambda: payments.request_refund(
            payment=payment, amount_fen=payment.amount_fen, reason=reason, refund_no=refund_no(payment)
        )
    )
    submit_refund_now(refund)


def register_paid_hold(*, hold_id: int, ask_first: bool = True) -> None:
    """Register a REGISTERING hold at the HIS: the handler of hold.registering, retried by the
    outbox with back-off while the HIS does not answer (HisTimeout propagates). A retry first asks
    the HIS what it did with the earlier call (`ask_first`). Past the hold's cutoff it gives up:
    see settle_overdue_registering."""
    hold = Hold.objects.select_related("session__hospital", "slot", "patient", "payment").get(id=hold_id)
    if hold.state != HoldState.REGISTERING:
        return
    if clock.now() >= selectors.registering_cutoff(hold):
        _give_up_registering(hold)
        return
    if ask_first:
        record = his(hold.session.hospital_id).query_registration(hold_id=hold.id)
        if record is not None and record.active:
            _record_registered(hold=hold, registration_no=record.registration_no)
            return
    patient, payment = hold.patient, hold.payment
    request = RegisterRequest(
        hold_id=hold.id,
        his_lock_id=hold.his_lock_id,
        session_code=hold.session.his_code,
        slot_code=hold.slot.his_code,
        slot_seq=hold.slot.seq,
        patient_name=patient.name,
        id_type=patient.id_type,
        id_number=patient.id_number,
        fee_fen=payment.amount_fen,
        insurance=payment.insurance,
        out_trade_no=payment.out_trade_no,
    )
    try:
        result = his(hold.session.hospital_id).register(request)
    except HisRefused as exc:
        fail_registering(hold=hold, reason=exc.reason or "his_refused", refund_reason="医院挂号失败，自动退款")
        return
    _record_registered(hold=hold, registration_no=result.registration_no)


def settle_overdue_registering(*, limit: int = 100) -> int:
    """Sweeper: every REGISTERING hold past its cutoff is settled now, whatever the outbox's back-off:
    registered if the HIS says so, else refunded and cancelled at the HIS."""
    now = clock.now()
    # No cutoff comes before both the grace after registering began and the window's start, so
    # this bounds the candidates in the database; the exact cutoff is checked per hold.
    candidates = (
        Hold.objects.select_related("session__hospital", "slot", "payment")
        .filter(Q(updated_at__lte=now - selectors.REGISTER_GRACE) | Q(slot__window_start__lte=now), state=HoldState.REGISTERING)
        .order_by("id")
    )
    overdue = list(itertools.islice((h for h in candidates.iterator() if now >= selectors.registering_cutoff(h)), limit))
    for hold in overdue:
        _give_up_registering(hold)
    return len(overdue)


def _give_up_registering(hold: Hold) -> None:
    try:
        record = his(hold.session.hospital_id).query_registration(hold_id=hold.id)
    except (HisTimeout, HisRefused):
        record = None  # unknown: refund, and the HIS is asked to cancel whatever it may have made
    if record is not None and record.active:
        _record_registered(hold=hold, registration_no=record.registration_no)
        return
    log.warning("registration outcome unknown at the cutoff; refunding", extra={"hold_id": hold.id})
    fail_registering(
        hold=hold,
        reason="his_no_answer",
        refund_reason="医院系统未确认挂号，自动退款",
        cancel_at_his=True,
    )


def _record_registered(*, hold: Hold, registration_no: str) -> None:
    """The HIS registered the hold: it becomes a registration, unless the session was suspended or
    the hold settled otherwise meanwhile, in which case the HIS is asked to cancel it."""

    def record() -> str:
        if lock_session_status(hold.session_id) != Session.Status.OPEN:
            return "suspended"
        now = clock.now()  # read under the lock, so it precedes any suspension's time
        won = Hold.objects.filter(
            id=hold.id, state__in=hold_sources(HoldState.SUCCEEDED, HoldState.REGISTERING)
        ).update(state=HoldState.SUCCEEDED, updated_at=now)
        if not won:
            return "lost"
        reg = Registration.objects.create(
            hold=hold,
            account_id=hold.account_id,
            patient_id=hold.patient_id,
            slot_id=hold.slot_id,
            session_id=hold.session_id,
            registration_no=registration_no,
            status=RegistrationStatus.BOOKED,
            fee_fen=hold.payment.amount_fen,
            booked_at=now,
        )
        emit("registration.booked", registration_id=reg.id, hold_id=hold.id)
        return "booked"

    outcome = atomic_retry(record)
    if outcome == "suspended":
        fail_registering(
            hold=hold,
            reason="session_suspended",
            refund_reason="医生停诊，自动退款",
            cancel_at_his=True,
            registration_no=registration_no,
        )
    elif outcome == "lost" and Hold.objects.filter(id=hold.id).exclude(state=HoldState.SUCCEEDED).exists():
        # Given up (cutoff, 停诊) while the HIS was registering: its registration must go too.
        atomic_retry(lambda: emit("his.cancel", hold_id=hold.id, registration_no=registration_no))


def fail_registering(
    *, hold: Hold, reason: str, refund_reason: str, cancel_at_his: bool = False, registration_no: str = ""
) -> Refund | None:
    """REGISTERING → FAILED with a full refund of the winning payment, in one transaction; with
    `cancel_at_his`, an his.cancel job too (the HIS may have registered unseen). Returns the refund,
    or None when the hold had already moved on."""
    now = clock.now()
    payment = hold.payment

    def fail() -> Refund | None:
        lock_slot(hold.slot_id)
        moved = Hold.objects.filter(id=hold.id, state__in=hold_sources(HoldState.FAILED, HoldState.REGISTERING)).update(
            state=HoldState.FAILED, updated_at=now
        )
        if not moved:
            return None
        if Slot.objects.filter(id=hold.slot_id, state=Slot.State.BOOKED).update(state=Slot.State.FREE, held_until=None):
            sold_out.forget_slot(hold.slot_id)
        refund = payments.request_refund(
            payment=payment, amount_fen=payment.amount_fen, reason=refund_reason, refund_no=refund_no(payment)
        )
        emit("hold.failed", hold_id=hold.id, reason=reason)
        if cancel_at_his:
            emit("his.cancel", hold_id=hold.id, registration_no=registration_no)
        return refund

    refund = atomic_retry(fail)
    if refund is not None:
        submit_refund_now(refund)
    return refund


def cancel_at_his(*, hold_id: int, registration_no: str = "") -> None:
    """The handler of his.cancel: cancel at the HIS whatever it registered for this hold, retried
    with back-off until the HIS does it. A refusal is retried too (the HIS may refuse for a while,
    e.g. while the slot is being settled there) and logged as an error: while it lasts,
    ledger-check names the hold for the operators."""
    try:
        his(_hospital_of_hold(hold_id)).cancel_registration(hold_id=hold_id, registration_no=registration_no)
    except HisRefused as exc:
        log.error("his refused to cancel a registration we refunded", extra={"hold_id": hold_id, "reason": exc.reason})
        raise


def _hospital_of_hold(hold_id: int) -> int | None:
    return Hold.objects.filter(id=hold_id).values_list("session__hospital_id", flat=True).first()
