"""停诊: every hold and registration of a suspended session is settled, whatever its state; and
its undo (恢复出诊) while nothing has been settled yet."""

from __future__ import annotations

from django.db import transaction

from guahao import clock
from guahao.booking.models import Hold, Registration
from guahao.booking.services.cancel import start_refund_for_cancellation
from guahao.booking.services.common import CLAIMABLE, free_slot, lock_slot
from guahao.booking.services.settle import fail_registering
from guahao.booking.states import HoldState, RegistrationStatus, hold_sources
from guahao.db import atomic_retry
from guahao.errors import Conflict, NotFound
from guahao.notifications.services import emit
from guahao.payments.models import Payment, Refund
from guahao.scheduling import services as scheduling
from guahao.scheduling.models import Session


def cancel_for_suspension(*, session_id: int) -> int:
    """停诊 (the handler of session.suspended): live holds end FAILED (their orders closed and HIS
    locks released by the outbox; a payment that still lands is refunded), REGISTERING holds are
    refunded and cancelled at the HIS, and booked registrations are cancelled with a full refund
    whatever the cancel deadline. Idempotent; returns how many registrations it cancelled."""
    session = Session.objects.get(id=session_id)
    if session.status != Session.Status.SUSPENDED:
        return 0
    now = clock.now()
    holds = Hold.objects.select_related("slot", "payment", "session").filter(
        session_id=session_id, state__in=(*CLAIMABLE, HoldState.REGISTERING)
    )
    registrations = Registration.objects.select_related("hold__payment").filter(
        session_id=session_id, status=RegistrationStatus.BOOKED
    )
    # Nothing to settle leaves the suspension undoable; anything to settle first closes that door
    # (a compare-and-set on the session row, which 恢复出诊's own one cannot pass afterwards).
    # While suspended no new hold or registration can appear, so "nothing" stays nothing.
    if not holds.exists() and not registrations.exists():
        return 0
    if not scheduling.start_settling_suspension(session_id=session_id, now=now):
        return 0  # resumed meanwhile
    for hold in holds:
        if hold.state == HoldState.REGISTERING:
            fail_registering(
                hold=hold, reason="session_suspended", refund_reason="医生停诊，自动退款", cancel_at_his=True
            )
            continue

        def end(hold: Hold = hold) -> None:
            lock_slot(hold.slot_id)
            if Hold.objects.filter(id=hold.id, state__in=hold_sources(HoldState.FAILED, *CLAIMABLE)).update(
                state=HoldState.FAILED, updated_at=now
            ):
                free_slot(slot_id=hold.slot_id, held_until=hold.expires_at)
                emit("hold.failed", hold_id=hold.id, reason="session_suspended")

        atomic_retry(end)
    cancelled = 0
    for registration in registrations:
        try:
            start_refund_for_cancellation(registration=registration, reason="医生停诊，自动退号", cancel_at_his=True)
            cancelled += 1
        except Conflict:  # cancelled by the patient in the meantime
            continue
    return cancelled


def resume_session(*, session_id: int) -> Session:
    """恢复出诊: a suspended session takes bookings again, allowed only while nothing of the
    suspension has been settled: no hold ended, payment refunded or registration cancelled since
    it, no paid order waiting to be decided, and the 停诊 job has not started settling. One
    transaction: the session row is taken FOR UPDATE first (as 停诊 does, so booking writes that
    read the status under the shared lock finish first), then the checks, then a compare-and-set
    on the row. Raises Conflict with the reason otherwise."""
    with transaction.atomic():
        row = scheduling.lock_session_for_status_change(session_id)
        if row is None:
            raise NotFound("排班不存在", code="session_not_found")
        if row["status"] != Session.Status.SUSPENDED:
            raise Conflict("该排班未停诊，无需恢复", code="session_not_suspended")
        if row["ends_at"] <= clock.now():
            raise Conflict("该排班已结束，不能恢复出诊", code="session_over")
        since = row["suspended_at"]
        settled = row["settling_since"] is not None or since is None or _settled_since(session_id, since)
        if settled:
            raise Conflict(
                "停诊后已有锁号被终止或挂号被退号退费，不能恢复出诊；如需接诊，请新建排班或加号",
                code="suspension_settled",
            )
        if Payment.objects.filter(
            hold__session_id=session_id, hold__state__in=CLAIMABLE, state=Payment.State.PAID
        ).exists():
            raise Conflict("有患者的支付正在处理中，请稍后再试", code="payment_in_progress")
        if not scheduling.reopen_session(session_id=session_id, suspended_at=since):
            raise Conflict("排班状态已变化，请刷新后重试", code="session_changed")
    return Session.objects.get(id=session_id)


def _settled_since(session_id: int, since) -> bool:
    return (
        Hold.objects.filter(session_id=session_id, state=HoldState.FAILED, updated_at__gte=since).exists()
        or Registration.objects.filter(session_id=session_id, cancelled_at__gte=since).exists()
        or Refund.objects.filter(payment__hold__session_id=session_id, created_at__gte=since).exists()
    )
