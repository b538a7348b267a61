"""`guahao ledger-check`: the nightly consistency check of slots, holds, registrations, payments
and refunds (DESIGN.md §2, "Invariants"). Tests call `find_violations()` too.

Read-only. Each table is checked with one query whose WHERE (or HAVING) keeps only the rows that
break a rule, so a healthy database answers with a handful of queries and no rows; the rows that do
come back are then explained in Python. Work the background worker does after a commit (expiry,
settling a paid order, closing orders) is given TIDY_INTERVAL before its absence counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models import Case, Count, Exists, F, OuterRef, Q, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce

from guahao import clock
from guahao.booking.models import Hold, Registration
from guahao.booking.selectors import REGISTER_GRACE, registering_cutoff
from guahao.booking.states import ACTIVE_REGISTRATION_STATES, HoldState, RegistrationStatus
from guahao.notifications.models import OutboxEvent
from guahao.payments.models import Payment, Refund
from guahao.scheduling.models import Session, Slot

# The grace period for background tidy-up (the worker's sweeps and outbox jobs).
TIDY_INTERVAL = dt.timedelta(minutes=10)
# A refund the provider has neither confirmed nor refused after this is stuck.
REFUND_STUCK_AFTER = dt.timedelta(days=1)

# Kinds that hold at every instant, whatever the worker's timing (the rest allow TIDY_INTERVAL or a
# deadline): the model-based test checks these after every step.
STRUCTURAL_KINDS = frozenset(
    {
        "slot_live_holds",
        "slot_active_registrations",
        "slot_state_mismatch",
        "hold_without_registration",
        "registration_on_unsucceeded_hold",
        "hold_winning_payment",
        "registration_after_suspension",
        "payment_refund_exceeds_amount",
        "payment_refunded_mismatch",
        "payment_refunds_exceed_paid",
        "payment_refund_unpaid",
        "payment_registered_and_refunded",
    }
)

_CLAIMABLE = (HoldState.HELD, HoldState.PAYING)
# Holds that are over: an order still open for one of them should have been closed by tidy-up.
_DEAD_HOLD_STATES = (HoldState.RELEASED, HoldState.EXPIRED, HoldState.FAILED, HoldState.SUCCEEDED)
_ACTIVE = [str(s) for s in ACTIVE_REGISTRATION_STATES]


@dataclass(frozen=True)
class Violation:
    """One broken rule on one row. `row` names the row as "<table>#<id>"."""

    kind: str
    row: str
    message: str


def find_violations(*, now: dt.datetime | None = None) -> list[Violation]:
    """Every violation of the ledger's invariants at `now` (default: the clock's now)."""
    now = now or clock.now()
    violations: list[Violation] = []
    violations += _slot_violations(now)
    hold_violations, overdue_registering = _hold_violations(now)
    violations += hold_violations
    violations += _registration_violations(now)
    violations += _payment_violations(now, overdue_registering)
    violations += _refund_violations(now)
    violations += _his_cancel_violations(now)
    return violations


def _ref(model: type[models.Model], pk: Any) -> str:
    return f"{model._meta.db_table}#{pk}"


def _at(moment: dt.datetime | None) -> str:
    """A time as operators read it: the hospital's local time."""
    return clock.local(moment).isoformat(timespec="seconds") if moment else "(none)"


# --- slots ------------------------------------------------------------------------------------------


def _slot_violations(now: dt.datetime) -> Iterator[Violation]:
    """At most one live hold and one active registration per slot, and the slot's own claim
    (state, held_until) agrees with its holds and registrations. One GROUP BY over slots and their
    holds and registrations; distinct counts because the two joins multiply each other's rows."""
    live = Q(holds__state__in=_CLAIMABLE, holds__expires_at__gt=now) | Q(holds__state=HoldState.REGISTERING)
    slots = Slot.objects.annotate(
        live=Count("holds", filter=live, distinct=True),
        registering=Count("holds", filter=Q(holds__state=HoldState.REGISTERING), distinct=True),
        unexpired=Count("holds", filter=Q(holds__state__in=_CLAIMABLE, holds__expires_at__gt=now), distinct=True),
        # The claim's token: the holding hold's expires_at equals the slot's held_until.
        matching=Count(
            "holds", filter=Q(holds__state__in=_CLAIMABLE, holds__expires_at=F("held_until")), distinct=True
        ),
        active=Count("registrations", filter=Q(registrations__status__in=_ACTIVE), distinct=True),
    )
    held_live = Q(state=Slot.State.HELD, held_until__gt=now)
    free_like = Q(state=Slot.State.FREE) | Q(state=Slot.State.HELD, held_until__lte=now)
    # Slots taken outside guahao are BOOKED with no hold or registration here.
    booked = Q(state=Slot.State.BOOKED) & ~Q(his_code=Slot.OFFLINE_CODE)
    owner_free = Q(registering=0, active=0, unexpired=0)
    bad = (
        Q(live__gt=1)
        | Q(active__gt=1)
        | Q(state=Slot.State.HELD, held_until__isnull=True)
        | (held_live & ~Q(matching=1, registering=0, active=0))
        | (booked & ~(Q(registering=1, active=0, unexpired=0) | Q(registering=0, active=1, unexpired=0)))
        | (free_like & ~owner_free)
        # Kept for the window: never claimed online, so nothing here may own it.
        | (Q(state=Slot.State.OFFLINE) & ~(owner_free & Q(live=0)))
    )
    rows = (
        slots.filter(bad)
        .order_by("id")
        .values("id", "state", "held_until", "his_code", "live", "registering", "unexpired", "matching", "active")
    )
    for slot in rows.iterator():
        yield from _explain_slot(slot, now)


def _explain_slot(slot: dict[str, Any], now: dt.datetime) -> Iterator[Violation]:
    row = _ref(Slot, slot["id"])
    counts = (
        f"live holds {slot['live']}, registering {slot['registering']}, "
        f"unexpired held/paying {slot['unexpired']}, active registrations {slot['active']}"
    )
    if slot["live"] > 1:
        yield Violation("slot_live_holds", row, f"slot has {slot['live']} live holds (at most one allowed)")
    if slot["active"] > 1:
        yield Violation(
            "slot_active_registrations", row, f"slot has {slot['active']} active registrations (at most one allowed)"
        )
    state, held_until = slot["state"], slot["held_until"]
    if state == Slot.State.HELD and held_until is None:
        yield Violation("slot_state_mismatch", row, "slot is held with no held_until: it can never be claimed again")
        return
    if state == Slot.State.HELD and held_until > now:
        if slot["matching"] != 1 or slot["registering"] or slot["active"]:
            yield Violation(
                "slot_state_mismatch",
                row,
                f"slot is held until {_at(held_until)} but {slot['matching']} held/paying holds expire then "
                f"(exactly one expected, and no registering hold or active registration; {counts})",
            )
    elif state == Slot.State.BOOKED and slot["his_code"] != Slot.OFFLINE_CODE:
        if slot["registering"] + slot["active"] != 1 or slot["unexpired"]:
            yield Violation(
                "slot_state_mismatch",
                row,
                f"slot is booked but is not owned by exactly one registering hold or active registration ({counts})",
            )
    elif state in (Slot.State.FREE, Slot.State.HELD) and (slot["registering"] or slot["active"] or slot["unexpired"]):
        yield Violation("slot_state_mismatch", row, f"slot counts as free but something still owns it ({counts})")
    elif state == Slot.State.OFFLINE and (slot["live"] or slot["registering"] or slot["active"] or slot["unexpired"]):
        yield Violation("slot_state_mismatch", row, f"slot is kept for the window (offline) but is claimed online ({counts})")


# --- holds ------------------------------------------------------------------------------------------


def _hold_violations(now: dt.datetime) -> tuple[list[Violation], set[int]]:
    """Registrations only on succeeded holds and one for each; the winning payment set and PAID;
    no hold left live past its expiry or registering past its cutoff. Also returns the ids of
    holds registering past their cutoff + TIDY, which the payment check needs."""
    # A REGISTERING hold's cutoff is never sooner than min(updated_at + REGISTER_GRACE, its window's
    # start), so only holds past that (plus TIDY) need the exact cutoff, which costs a query for the rule.
    maybe_overdue = Q(state=HoldState.REGISTERING) & (
        Q(updated_at__lte=now - TIDY_INTERVAL - REGISTER_GRACE) | Q(slot__window_start__lte=now - TIDY_INTERVAL)
    )
    winner_wrong = Q(payment__isnull=True) | ~Q(payment__state=Payment.State.PAID) | ~Q(payment__hold_id=F("id"))
    bad = (
        Q(state=HoldState.SUCCEEDED, registration__isnull=True)
        | (Q(registration__isnull=False) & ~Q(state=HoldState.SUCCEEDED))
        | (Q(state__in=(HoldState.REGISTERING, HoldState.SUCCEEDED)) & winner_wrong)
        | Q(state__in=_CLAIMABLE, expires_at__lte=now - TIDY_INTERVAL)
        | maybe_overdue
    )
    holds = (
        Hold.objects.filter(bad)
        .select_related("session", "slot", "payment")
        .annotate(registration_pk=F("registration__id"))
        .order_by("id")
    )
    violations: list[Violation] = []
    overdue: set[int] = set()
    for hold in holds.iterator(chunk_size=200):
        row = _ref(Hold, hold.id)
        state = HoldState(hold.state)
        if state == HoldState.SUCCEEDED and hold.registration_pk is None:
            violations.append(Violation("hold_without_registration", row, "hold succeeded but has no registration"))
        if hold.registration_pk is not None and state != HoldState.SUCCEEDED:
            violations.append(
                Violation(
                    "registration_on_unsucceeded_hold",
                    _ref(Registration, hold.registration_pk),
                    f"registration belongs to {row} in state {state.value} (only succeeded holds have one)",
                )
            )
        if state in (HoldState.REGISTERING, HoldState.SUCCEEDED):
            problem = _winning_payment_problem(hold)
            if problem:
                violations.append(Violation("hold_winning_payment", row, f"{state.value} hold: {problem}"))
        if state in _CLAIMABLE and hold.expires_at <= now - TIDY_INTERVAL:
            violations.append(
                Violation(
                    "hold_not_expired",
                    row,
                    f"hold is still {state.value} though it expired at {_at(hold.expires_at)}: "
                    "the expiry sweep has not run",
                )
            )
        if state == HoldState.REGISTERING:
            cutoff = registering_cutoff(hold)
            if now >= cutoff + TIDY_INTERVAL:
                overdue.add(hold.id)
                violations.append(
                    Violation(
                        "hold_registering_overdue",
                        row,
                        f"hold is still registering past its cutoff {_at(cutoff)}: "
                        "it should have been registered or refunded",
                    )
                )
    return violations, overdue


def _winning_payment_problem(hold: Hold) -> str:
    payment = hold.payment
    if payment is None:
        return "no winning payment is set"
    if payment.state != Payment.State.PAID:
        return f"winning payment {_ref(Payment, payment.id)} is {payment.state}, not paid"
    if payment.hold_id != hold.id:
        return f"winning payment {_ref(Payment, payment.id)} belongs to {_ref(Hold, payment.hold_id)}"
    return ""


# --- registrations ----------------------------------------------------------------------------------


def _registration_violations(now: dt.datetime) -> Iterator[Violation]:
    """停诊: nothing is registered after a session's suspension, and its booked registrations are
    cancelled (by the worker's session.suspended job) within TIDY."""
    suspended = Q(session__status=Session.Status.SUSPENDED, session__suspended_at__isnull=False)
    bad = suspended & (
        Q(session__suspended_at__lt=F("booked_at"))
        | Q(status=RegistrationStatus.BOOKED, session__suspended_at__lte=now - TIDY_INTERVAL)
    )
    rows = (
        Registration.objects.filter(bad)
        .order_by("id")
        .values("id", "status", "booked_at", "session_id", "session__suspended_at")
    )
    for reg in rows.iterator():
        row = _ref(Registration, reg["id"])
        suspended_at = reg["session__suspended_at"]
        session = _ref(Session, reg["session_id"])
        if suspended_at < reg["booked_at"]:
            yield Violation(
                "registration_after_suspension",
                row,
                f"registered at {_at(reg['booked_at'])}, after {session} was suspended at {_at(suspended_at)}",
            )
        if reg["status"] == RegistrationStatus.BOOKED and suspended_at <= now - TIDY_INTERVAL:
            yield Violation(
                "registration_not_cancelled_after_suspension",
                row,
                f"still booked though {session} was suspended at {_at(suspended_at)}: "
                "it should have been cancelled and refunded",
            )


# --- payments ---------------------------------------------------------------------------------------


def _flag(condition: Q) -> Case:
    """A condition as a non-null boolean column, so that negating it is plain two-valued logic
    (a condition over a LEFT JOIN's NULLs would otherwise be neither true nor false)."""
    return Case(When(condition, then=Value(True)), default=Value(False), output_field=models.BooleanField())


def _refund_sum(*states: str) -> Coalesce:
    refunds = (
        Refund.objects.filter(payment=OuterRef("pk"), state__in=states)
        .order_by()
        .values("payment")
        .annotate(total=Sum("amount_fen"))
        .values("total")
    )
    return Coalesce(Subquery(refunds, output_field=models.IntegerField()), 0)


def _payment_violations(now: dt.datetime, overdue_registering: set[int]) -> Iterator[Violation]:
    """Money: refunded_fen matches the succeeded refunds and never exceeds the amount. Settlement:
    every PAID payment older than TIDY is either the winner of a registering (until its cutoff) or
    succeeded hold with an active registration and no refund, or refunded (in progress, or in
    full), never both. Orders: none left open past expiry or after its hold ended."""
    old = now - TIDY_INTERVAL
    payments = Payment.objects.annotate(
        # MANUAL (paid back another way by staff) is final and counts exactly as SUCCEEDED.
        succeeded_fen=_refund_sum(Refund.State.SUCCEEDED, Refund.State.MANUAL),
        committed_fen=_refund_sum(Refund.State.PROCESSING, Refund.State.SUCCEEDED, Refund.State.MANUAL),
        has_refund=Exists(Refund.objects.filter(payment=OuterRef("pk"))),
        # PROCESSING is in progress; FAILED waits for staff (reported on the refund's own row).
        has_pending_refund=Exists(
            Refund.objects.filter(payment=OuterRef("pk"), state__in=(Refund.State.PROCESSING, Refund.State.FAILED))
        ),
        is_winner=_flag(Q(hold__payment_id=F("pk"))),
        registration_active=_flag(Q(hold__registration__status__in=_ACTIVE)),
        hold_state=F("hold__state"),
        hold_updated_at=F("hold__updated_at"),
        registration_pk=F("hold__registration__id"),
    )
    paid = Q(state=Payment.State.PAID)
    money_bad = (
        Q(refunded_fen__gt=F("amount_fen"))
        | ~Q(refunded_fen=F("succeeded_fen"))
        | Q(committed_fen__gt=F("amount_fen"))
        | (~paid & Q(has_refund=True))
    )
    # Never true even for a moment: the refund and the registration's (or hold's) move share a
    # transaction, so these need no grace period.
    both = (
        paid
        & Q(has_refund=True, is_winner=True)
        & (Q(registration_active=True) | Q(hold_state=HoldState.REGISTERING))
    )
    registered = Q(is_winner=True, hold_state=HoldState.SUCCEEDED, registration_active=True, has_refund=False)
    being_refunded = Q(has_refund=True) & (Q(has_pending_refund=True) | Q(refunded_fen=F("amount_fen")))
    # A registering winner comes back too: only its hold's cutoff (checked above) tells.
    unsettled = paid & (Q(paid_at__lte=old) | Q(paid_at__isnull=True)) & ~registered & ~being_refunded
    open_order = Q(state=Payment.State.CREATED) & (
        Q(expires_at__lte=old) | Q(hold_state__in=_DEAD_HOLD_STATES, hold_updated_at__lte=old, is_winner=False)
    )
    rows = (
        payments.filter(money_bad | both | unsettled | open_order)
        .order_by("id")
        .values(
            "id",
            "state",
            "amount_fen",
            "refunded_fen",
            "succeeded_fen",
            "committed_fen",
            "has_refund",
            "has_pending_refund",
            "is_winner",
            "registration_active",
            "registration_pk",
            "hold_id",
            "hold_state",
            "hold_updated_at",
            "paid_at",
            "expires_at",
        )
    )
    for payment in rows.iterator():
        yield from _explain_payment(payment, now, overdue_registering)


def _explain_payment(p: dict[str, Any], now: dt.datetime, overdue_registering: set[int]) -> Iterator[Violation]:
    row = _ref(Payment, p["id"])
    hold = _ref(Hold, p["hold_id"])
    old = now - TIDY_INTERVAL
    # Money.
    if p["refunded_fen"] > p["amount_fen"]:
        yield Violation(
            "payment_refund_exceeds_amount", row, f"refunded {p['refunded_fen']} fen of a {p['amount_fen']} fen payment"
        )
    if p["refunded_fen"] != p["succeeded_fen"]:
        yield Violation(
            "payment_refunded_mismatch",
            row,
            f"refunded_fen is {p['refunded_fen']} but its succeeded refunds add up to {p['succeeded_fen']} fen",
        )
    if p["committed_fen"] > p["amount_fen"]:
        yield Violation(
            "payment_refunds_exceed_paid",
            row,
            f"refunds in progress or done add up to {p['committed_fen']} fen, more than the {p['amount_fen']} fen paid",
        )
    if p["state"] != Payment.State.PAID and p["has_refund"]:
        yield Violation("payment_refund_unpaid", row, f"payment is {p['state']} (not paid) but has a refund")
    if p["state"] == Payment.State.CREATED:
        yield from _explain_open_order(p, row, hold, old)
    if p["state"] != Payment.State.PAID:
        return
    # Settlement.
    if p["has_refund"] and p["is_winner"] and p["registration_active"]:
        yield Violation(
            "payment_registered_and_refunded",
            row,
            f"both registered and refunded: registration {_ref(Registration, p['registration_pk'])} is active "
            "while its payment has a refund",
        )
        return
    if p["has_refund"] and p["is_winner"] and p["hold_state"] == HoldState.REGISTERING:
        yield Violation(
            "payment_registered_and_refunded",
            row,
            f"both registering and refunded: it won {hold}, still registering, yet it has a refund",
        )
        return
    if p["paid_at"] is not None and p["paid_at"] > old:
        return  # the worker has TIDY to settle it
    if p["has_refund"]:
        if not p["has_pending_refund"] and p["refunded_fen"] < p["amount_fen"]:
            yield Violation(
                "payment_partly_refunded",
                row,
                f"only {p['refunded_fen']} of {p['amount_fen']} fen refunded, with no refund in progress "
                "and no registration",
            )
        return
    if p["is_winner"] and p["hold_state"] == HoldState.SUCCEEDED and p["registration_active"]:
        return
    if p["is_winner"] and p["hold_state"] == HoldState.REGISTERING:
        if p["hold_id"] in overdue_registering:
            yield Violation(
                "payment_unsettled",
                row,
                f"paid, neither registered nor refunded: it won {hold}, still registering past its cutoff",
            )
        return
    yield Violation(
        "payment_unsettled",
        row,
        f"paid, neither registered nor refunded (paid at {_at(p['paid_at'])}; {hold} is {p['hold_state']}"
        f"{', and this is not its winning payment' if not p['is_winner'] else ''})",
    )


def _explain_open_order(p: dict[str, Any], row: str, hold: str, old: dt.datetime) -> Iterator[Violation]:
    if p["expires_at"] <= old:
        yield Violation(
            "payment_order_open",
            row,
            f"order still open at the provider though it expired at {_at(p['expires_at'])}: it should be closed",
        )
    elif p["hold_state"] in _DEAD_HOLD_STATES and not p["is_winner"] and p["hold_updated_at"] <= old:
        yield Violation(
            "payment_order_of_dead_hold",
            row,
            f"order still open at the provider though {hold} ended ({p['hold_state']}) at "
            f"{_at(p['hold_updated_at'])}: it should be closed",
        )


# --- refunds ----------------------------------------------------------------------------------------


def _refund_violations(now: dt.datetime) -> Iterator[Violation]:
    """A refund the provider refused needs staff; one unconfirmed after a day is stuck; one staff
    paid back another way says who, why and when."""
    rows = (
        Refund.objects.filter(
            Q(state=Refund.State.FAILED)
            | Q(state=Refund.State.PROCESSING, created_at__lte=now - REFUND_STUCK_AFTER)
            | (
                Q(state=Refund.State.MANUAL)
                & (Q(handled_by="") | Q(handled_note="") | Q(succeeded_at__isnull=True) | Q(last_error=Refund.PAID_TWICE))
            )
        )
        .order_by("id")
        .values("id", "state", "refund_no", "payment_id", "created_at", "last_error")
    )
    for refund in rows.iterator():
        row = _ref(Refund, refund["id"])
        payment = _ref(Payment, refund["payment_id"])
        if refund["state"] == Refund.State.MANUAL and refund["last_error"] == Refund.PAID_TWICE:
            yield Violation(
                "refund_paid_twice",
                row,
                f"refund paid back by hand and by the provider too: recover one (refund of {payment})",
            )
        elif refund["state"] == Refund.State.MANUAL:
            yield Violation(
                "refund_manual_unexplained",
                row,
                f"refund marked as paid back another way without who did it, why or when (refund of {payment})",
            )
        elif refund["state"] == Refund.State.FAILED:
            yield Violation(
                "refund_failed",
                row,
                f"refund failed: needs staff, `guahao refunds --retry {refund['refund_no']}` (refund of {payment})",
            )
        else:
            yield Violation(
                "refund_stuck",
                row,
                f"refund stuck: processing since {_at(refund['created_at'])}, not confirmed by the provider "
                f"(refund of {payment})",
            )


# --- cancels owed to the HIS -------------------------------------------------------------------------


def _his_cancel_violations(now: dt.datetime) -> Iterator[Violation]:
    """A registration refunded here (停诊, the cutoff) must be cancelled at the HIS too: the his.cancel
    job retries until the HIS does it; one still pending after TIDY needs a look."""
    rows = (
        OutboxEvent.objects.filter(topic="his.cancel", processed_at__isnull=True, created_at__lte=now - TIDY_INTERVAL)
        .order_by("id")
        .values("id", "payload", "attempts", "last_error")
    )
    for event in rows.iterator():
        hold = _ref(Hold, event["payload"].get("hold_id"))
        yield Violation(
            "his_cancel_pending",
            _ref(OutboxEvent, event["id"]),
            f"the HIS has not cancelled the registration of {hold}, refunded here, after {event['attempts']} "
            f"attempts (last: {event['last_error'] or 'none'}): cancel it in the HIS",
        )
