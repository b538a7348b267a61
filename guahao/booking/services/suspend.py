"""停诊: every hold and registration of a suspended session is settled, whatever its state."""

from __future__ import annotations

from guahao import clock
from guahao.booking.models import Hold, Registration
from guahao.booking.services.cancel import start_refund_for_cancellation
from guahao.booking.services.common import CLAIMABLE, free_slot, lock_slot
from guahao.booking.services.settle import fail_registering
from guahao.booking.states import HoldState, RegistrationStatus, hold_sources
from guahao.db import atomic_retry
from guahao.errors import Conflict
from guahao.notifications.services import emit
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
    registrations = Registration.objects.select_related("hold__payment").filter(
        session_id=session_id, status=RegistrationStatus.BOOKED
    )
    for registration in registrations:
        try:
            start_refund_for_cancellation(registration=registration, reason="医生停诊，自动退号", cancel_at_his=True)
            cancelled += 1
        except Conflict:  # cancelled by the patient in the meantime
            continue
    return cancelled
