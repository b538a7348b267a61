"""Cancelling a registration: by the patient before the deadline, by staff, by 停诊, and finishing
when the refund succeeds."""

from __future__ import annotations

from collections.abc import Callable

from guahao import clock
from guahao.booking import selectors
from guahao.booking.models import Registration
from guahao.booking.services.common import (
    his,
    lock_slot,
    log,
    refund_no,
    submit_refund_now,
)
from guahao.booking.soldout import sold_out
from guahao.booking.states import (
    RegistrationStatus,
    check_registration_move,
    registration_refusal,
    registration_sources,
)
from guahao.db import atomic_retry
from guahao.errors import Conflict
from guahao.his.base import HisRefused, HisTimeout
from guahao.notifications.services import emit
from guahao.patients.models import Account
from guahao.payments import services as payments
from guahao.payments.models import Refund
from guahao.policies import engine as policy_engine
from guahao.scheduling.models import Slot
from guahao.scheduling.selectors import release_rule_for


def cancel_registration(*, account: Account, registration_id: int, reason: str = "患者取消") -> Registration:
    """Cancel before the hospital's deadline (counted from the slot's own time window): the HIS
    cancels, the slot returns to the pool, and a full refund starts. The registration is REFUNDING
    until the provider confirms, then CANCELLED."""
    reg = selectors.get_registration_for_account(account=account, registration_id=registration_id)
    check_registration_move(reg.status, RegistrationStatus.REFUNDING)
    rule = release_rule_for(reg.session)
    deadline = selectors.cancel_deadline(reg, hours=rule.cancel_deadline_hours)
    if clock.now() >= deadline:
        raise Conflict(
            f"已超过线上退号截止时间（{clock.local(deadline):%m月%d日 %H:%M}），请到医院窗口办理",
            code="cancel_deadline_passed",
        )
    return cancel_at_his_and_refund(registration=reg, reason=reason, by_patient=True)


def cancel_at_his_and_refund(
    *,
    registration: Registration,
    reason: str,
    cancelled_by: str = "",
    by_patient: bool = False,
    also: Callable[[Registration], None] | None = None,
) -> Registration:
    """The cancel itself, once the caller has decided it may happen (the patient before the
    deadline, or staff): the HIS cancels, then start_refund_for_cancellation."""
    reg = registration
    try:
        his(reg.session.hospital_id).cancel_registration(hold_id=reg.hold_id, registration_no=reg.registration_no)
    except HisRefused as exc:
        raise Conflict("医院系统不允许取消该挂号，请联系医院客服", code="his_refused") from exc
    except HisTimeout:
        # No answer: the HIS may have cancelled already (a lost reply), and a registration kept
        # BOOKED here would then exist nowhere else. The cancel was asked for in time, so it is
        # committed: refund now, and the his.cancel job repeats the (idempotent) cancel until the
        # HIS confirms it.
        log.warning("his cancel unanswered; cancelling through the outbox", extra={"hold_id": reg.hold_id})
        return start_refund_for_cancellation(
            registration=reg, reason=reason, cancel_at_his=True, cancelled_by=cancelled_by, by_patient=by_patient, also=also
        )
    return start_refund_for_cancellation(
        registration=reg, reason=reason, cancelled_by=cancelled_by, by_patient=by_patient, also=also
    )


def start_refund_for_cancellation(
    *,
    registration: Registration,
    reason: str,
    cancel_at_his: bool = False,
    cancelled_by: str = "",
    by_patient: bool = False,
    also: Callable[[Registration], None] | None = None,
) -> Registration:
    """BOOKED → REFUNDING with the slot back in the pool and a full refund requested, in one
    transaction. With `cancel_at_his`, an his.cancel job too (停诊: the HIS was not asked inline).
    `cancelled_by` names the staff member who cancelled for the patient; `by_patient` marks the
    patient's own cancel, which the repeated-cancellation rule counts (its ban, if earned, is made
    in this transaction); `also` is a write of the caller's (the console's audit row) that commits
    or rolls back with the cancel. Raises Conflict when the registration has moved on."""
    now = clock.now()
    payment = registration.hold.payment

    def start() -> Refund:
        lock_slot(registration.slot_id)
        moved = Registration.objects.filter(
            id=registration.id,
            status__in=registration_sources(RegistrationStatus.REFUNDING, RegistrationStatus.BOOKED),
        ).update(
            status=RegistrationStatus.REFUNDING,
            cancelled_at=now,
            cancel_reason=reason[:100],
            cancelled_by=cancelled_by,
            cancelled_by_patient=by_patient,
        )
        if not moved:
            current = Registration.objects.values_list("status", flat=True).get(id=registration.id)
            raise registration_refusal(current, RegistrationStatus.REFUNDING)
        # The number goes back to the pool for other patients.
        if Slot.objects.filter(id=registration.slot_id, state=Slot.State.BOOKED).update(
            state=Slot.State.FREE, held_until=None
        ):
            sold_out.forget_slot(registration.slot_id)
        refund = payments.request_refund(
            payment=payment, amount_fen=payment.amount_fen, reason=reason, refund_no=refund_no(payment)
        )
        emit("registration.refunding", registration_id=registration.id)
        if cancel_at_his:
            emit("his.cancel", hold_id=registration.hold_id, registration_no=registration.registration_no)
        if by_patient:
            policy_engine.count_patient_cancel(registration=registration)
        if also is not None:
            also(registration)
        return refund

    refund = atomic_retry(start)
    submit_refund_now(refund)
    registration.refresh_from_db()
    return registration


def finish_refund(*, refund_id: int) -> None:
    """A refund succeeded: a REFUNDING registration paid by it becomes CANCELLED. Idempotent."""
    refund = Refund.objects.get(id=refund_id)
    if refund.state not in (Refund.State.SUCCEEDED, Refund.State.MANUAL):
        return
    reg = Registration.objects.filter(
        hold__payment_id=refund.payment_id, status=RegistrationStatus.REFUNDING
    ).first()
    if reg is None:
        return

    def finish() -> None:
        moved = Registration.objects.filter(
            id=reg.id, status__in=registration_sources(RegistrationStatus.CANCELLED, RegistrationStatus.REFUNDING)
        ).update(status=RegistrationStatus.CANCELLED)
        if moved:
            emit("registration.cancelled", registration_id=reg.id, refund_id=refund.id)

    atomic_retry(finish)
