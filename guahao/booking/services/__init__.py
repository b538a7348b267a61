"""Booking: hold a slot, confirm, pay, register, cancel, 停诊, staff actions (DESIGN.md §2), one module per flow.

What every write here guarantees:
- One transaction per write, retried from the start when the database aborts it as a deadlock or
  serialization failure (guahao.db.atomic_retry). Calls to the HIS and to payment providers happen
  outside transactions, so a slow outside system never holds a database lock.
- Every state change is a compare-and-set on the row it changes: the whole condition sits in the
  UPDATE's WHERE on that row (no join, which PostgreSQL would not re-check), and its source states
  come from the tables in booking/states.py.
- Rows are locked in one order: session (shared) → slot → hold → account → registration → payment
  → refund. A cross-row condition (the session is open) is read under the session's shared lock,
  which 停诊's update of that row waits for.
- Work that must follow a commit (close a payment order, release an HIS lock, cancel at the HIS,
  refund) is an outbox event written in the same transaction and retried until done; anything
  tried at once after the commit is only a head start.
"""

from guahao.booking.services.cancel import cancel_registration, finish_refund
from guahao.booking.services.hold import (
    check_payment,
    confirm_hold,
    expire_holds,
    hold_slot,
    pay_hold,
    release_hold,
    tidy_dead_hold,
)
from guahao.booking.services.settle import (
    cancel_at_his,
    complete_paid_hold,
    register_paid_hold,
    settle_overdue_registering,
)
from guahao.booking.services.staff import (
    cancel_registration_by_staff,
    mark_attendance,
    record_manual_refund,
)
from guahao.booking.services.suspend import cancel_for_suspension

__all__ = [
    "cancel_at_his",
    "cancel_for_suspension",
    "cancel_registration",
    "cancel_registration_by_staff",
    "check_payment",
    "complete_paid_hold",
    "confirm_hold",
    "expire_holds",
    "finish_refund",
    "hold_slot",
    "mark_attendance",
    "pay_hold",
    "record_manual_refund",
    "register_paid_hold",
    "release_hold",
    "settle_overdue_registering",
    "tidy_dead_hold",
]
