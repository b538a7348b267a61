"""What the booking flows share: the HIS adapter, the slot lock that starts every transaction on a
hold, the refund number, and the first try of a refund."""

from __future__ import annotations

import datetime as dt
import logging

from guahao.booking.soldout import sold_out
from guahao.booking.states import HoldState
from guahao.his import services as his_services
from guahao.his.base import HisAdapter
from guahao.payments import services as payments
from guahao.payments.models import Payment, Refund
from guahao.payments.providers.base import ProviderError
from guahao.scheduling.models import Session, Slot

log = logging.getLogger("guahao.booking")

CLAIMABLE = (HoldState.HELD, HoldState.PAYING)


def his(hospital_id: int | None) -> HisAdapter:
    """The HIS adapter of the hospital a hold or registration belongs to."""
    return his_services.adapter_for(hospital_id)


def service_phone_hint(session: Session) -> str:
    phone = session.hospital.service_phone
    return f"；如需帮助请致电医院客服 {phone}" if phone else ""


def refund_no(payment: Payment) -> str:
    # One full refund per payment at most, whichever path asks for it: the number makes it so.
    return f"RF{payment.out_trade_no}"


def lock_slot(slot_id: int) -> None:
    """The first lock of a transaction that changes a hold or a registration: the slot row (see the
    lock order in the package docstring). SQLite has one writer at a time and needs no row lock."""
    Slot.objects.select_for_update().filter(id=slot_id).values_list("id", flat=True).first()


def free_slot(*, slot_id: int, held_until: dt.datetime) -> None:
    """Free a slot this hold still owns (held_until is the claim's token: a later claim differs)."""
    if Slot.objects.filter(id=slot_id, state=Slot.State.HELD, held_until=held_until).update(
        state=Slot.State.FREE, held_until=None
    ):
        sold_out.forget_slot(slot_id)


def submit_refund_now(refund: Refund) -> None:
    """A head start: the refund.requested event written with the refund submits it anyway."""
    try:
        payments.submit_refund(refund_id=refund.id)
    except ProviderError:
        log.warning("refund submit deferred to worker", extra={"refund_id": refund.id})
