"""What hospital staff do to a registration from the console: cancel and refund on a patient's
behalf, record attendance by hand, and close a refund they paid back another way. Each write keeps
the guarantees of the package docstring; `record` is a write of the caller's (the console's audit
row) that commits or rolls back with the change it records."""

from __future__ import annotations

from collections.abc import Callable

from guahao import clock
from guahao.booking.models import Registration
from guahao.booking.services.cancel import cancel_at_his_and_refund
from guahao.booking.services.common import lock_slot
from guahao.booking.states import REGISTRATION_TRANSITIONS, RegistrationStatus, registration_sources
from guahao.db import atomic_retry
from guahao.errors import Conflict, InvalidInput, NotFound
from guahao.notifications.services import emit
from guahao.payments import services as payments
from guahao.payments.models import Refund
from guahao.policies import engine as policy_engine

# What staff may record by hand, and the event each writes.
ATTENDANCE_MOVES: dict[RegistrationStatus, str] = {
    RegistrationStatus.CHECKED_IN: "registration.checked_in",
    RegistrationStatus.VISITED: "registration.visited",
    RegistrationStatus.NO_SHOW: "registration.no_show",
}


def _get(registration_id: int) -> Registration:
    reg = Registration.objects.select_related("hold__payment", "session").filter(id=registration_id).first()
    if reg is None:
        raise NotFound("挂号单不存在", code="registration_not_found")
    return reg


def _refused(current: str, action: str) -> Conflict:
    label = RegistrationStatus(current).label
    return Conflict(f"该挂号单当前为“{label}”，不能{action}", code="registration_state_conflict", current=current)


def cancel_registration_by_staff(
    *,
    registration_id: int,
    staff_username: str,
    reason: str,
    record: Callable[[Registration], None] | None = None,
) -> Registration:
    """Cancel a BOOKED registration for its patient, whatever the online cancel deadline (staff
    decide), by the patient's own path: the HIS cancels (a timeout leaves an his.cancel job), the
    slot returns to the pool and a full refund starts under the number derived from the order, all
    with compare-and-set moves from the state table. Sets cancelled_by. Raises InvalidInput without
    a reason, Conflict when the registration has moved on or the HIS refuses."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("请填写取消原因", code="reason_required")
    reg = _get(registration_id)
    if RegistrationStatus.REFUNDING not in REGISTRATION_TRANSITIONS[RegistrationStatus(reg.status)]:
        raise _refused(reg.status, "取消")
    return cancel_at_his_and_refund(registration=reg, reason=reason, cancelled_by=staff_username, also=record)


def mark_attendance(
    *,
    registration_id: int,
    status: str,
    record: Callable[[Registration], None] | None = None,
) -> Registration:
    """Record by hand that the patient took the number (已取号), was seen (已就诊) or did not come
    (爽约): one compare-and-set from the states the table allows into `status`, with its event."""
    try:
        target = RegistrationStatus(status)
    except ValueError:
        target = None
    if target not in ATTENDANCE_MOVES:
        raise InvalidInput("只能标记为已取号、已就诊或爽约", code="attendance_invalid")
    reg = _get(registration_id)
    sources = [s for s, targets in REGISTRATION_TRANSITIONS.items() if target in targets]

    def move() -> None:
        lock_slot(reg.slot_id)
        no_show = target == RegistrationStatus.NO_SHOW
        moved = Registration.objects.filter(
            id=reg.id, status__in=registration_sources(target, *sources)
        ).update(status=target, **({"no_show_at": clock.now()} if no_show else {}))
        if not moved:
            current = Registration.objects.values_list("status", flat=True).get(id=reg.id)
            raise _refused(current, f"标记为“{target.label}”")
        emit(ATTENDANCE_MOVES[target], registration_id=reg.id)
        if no_show:  # counted like the scheduler's marking: the ban rule, in this transaction
            policy_engine.count_no_show(registration=reg)
        if record is not None:
            record(reg)

    atomic_retry(move)
    reg.refresh_from_db()
    return reg


def record_manual_refund(
    *,
    refund_no: str,
    staff_username: str,
    note: str,
    record: Callable[[Refund], None] | None = None,
) -> Refund:
    """Staff paid a failed refund back another way: the refund becomes MANUAL (counted as refunded,
    see payments.mark_refund_manual) and the registration it refunds, if any, CANCELLED, in one
    transaction."""
    refund = Refund.objects.filter(refund_no=refund_no).first()
    if refund is None:
        raise NotFound("退款单不存在", code="refund_not_found")
    payments.confirm_not_refunded_at_provider(refund_no=refund_no)  # a provider call: before the transaction
    reg = Registration.objects.filter(
        hold__payment_id=refund.payment_id, status=RegistrationStatus.REFUNDING
    ).first()

    def close() -> Refund:
        # The lock order: slot → registration → payment → refund. A refund that is not FAILED
        # raises in mark_refund_manual and rolls the registration's move back with it.
        cancelled = False
        if reg is not None:
            lock_slot(reg.slot_id)
            cancelled = bool(
                Registration.objects.filter(
                    id=reg.id,
                    status__in=registration_sources(RegistrationStatus.CANCELLED, RegistrationStatus.REFUNDING),
                ).update(status=RegistrationStatus.CANCELLED)
            )
        done = payments.mark_refund_manual(
            refund_no=refund_no, staff_username=staff_username, note=note, provider_asked=True
        )
        if cancelled:
            emit("registration.cancelled", registration_id=reg.id, refund_id=done.id)
        if record is not None:
            record(done)
        return done

    return atomic_retry(close)


