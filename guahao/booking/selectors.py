"""Reads for booking: an account sees only its own holds and registrations."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, Q, QuerySet

from guahao import clock
from guahao.booking.models import Hold, Registration
from guahao.booking.states import HoldState, RegistrationStatus
from guahao.errors import NotFound
from guahao.patients.models import Account
from guahao.scheduling.selectors import release_rule_for

_HOLD_RELATED = ("slot", "session__department", "session__doctor", "session__hospital", "patient")


def effective_state(hold: Hold, now: dt.datetime | None = None) -> HoldState:
    """A HELD or PAYING hold past its expiry is EXPIRED, whether or not a sweeper has written it."""
    now = now or clock.now()
    state = HoldState(hold.state)
    if state in (HoldState.HELD, HoldState.PAYING) and hold.expires_at <= now:
        return HoldState.EXPIRED
    return state


def remaining_seconds(hold: Hold, now: dt.datetime | None = None) -> int:
    now = now or clock.now()
    if effective_state(hold, now) not in (HoldState.HELD, HoldState.PAYING):
        return 0
    return max(0, int((hold.expires_at - now).total_seconds()))


def get_hold_for_account(*, account: Account, hold_id: int) -> Hold:
    """Another account's hold is answered exactly like a missing one."""
    hold = Hold.objects.select_related(*_HOLD_RELATED).filter(id=hold_id, account=account).first()
    if hold is None:
        raise NotFound("锁号记录不存在", code="hold_not_found")
    return hold


def registrations_of(*, account: Account, status: str | None = None) -> QuerySet[Registration]:
    regs = Registration.objects.filter(account=account).select_related(
        "slot", "session__department", "session__doctor", "session__hospital", "patient"
    )
    if status:
        regs = regs.filter(status=status)
    return regs.order_by("-booked_at")


def get_registration_for_account(*, account: Account, registration_id: int) -> Registration:
    reg = registrations_of(account=account).filter(id=registration_id).first()
    if reg is None:
        raise NotFound("挂号记录不存在", code="registration_not_found")
    return reg


def cancel_deadline(registration: Registration, *, hours: int) -> dt.datetime:
    """Online cancellation closes `hours` before the registration's own time window (分时段), not
    before the session's start."""
    return registration.slot.window_start - dt.timedelta(hours=hours)


# However late a patient pays, the HIS gets this long to answer before the payment is refunded.
REGISTER_GRACE = dt.timedelta(minutes=5)


def registering_cutoff(hold: Hold) -> dt.datetime:
    """When a REGISTERING hold whose HIS outcome is still unknown is given up (refunded, and the
    HIS asked to cancel): the release rule's minutes before the session starts, but never sooner
    than REGISTER_GRACE after the hold began registering (its last update), nor later than the
    session's start."""
    session = hold.session
    by_rule = session.starts_at - dt.timedelta(minutes=release_rule_for(session).register_cutoff_minutes)
    return max(by_rule, min(hold.updated_at + REGISTER_GRACE, session.starts_at))


def _live_q(now: dt.datetime) -> Q:
    return Q(state__in=(HoldState.HELD, HoldState.PAYING), expires_at__gt=now) | Q(state=HoldState.REGISTERING)


def hold_counts(*, account: Account, now: dt.datetime) -> tuple[int, int]:
    """(live holds, holds made today) for the per-account caps, in one query."""
    start = clock.at_local(clock.local(now).date(), dt.time(0, 0))
    counts = Hold.objects.filter(account=account).aggregate(
        live=Count("id", filter=_live_q(now)), today=Count("id", filter=Q(created_at__gte=start))
    )
    return counts["live"], counts["today"]


def patient_has_booking_in_session(*, patient_index: str, session_id: int, exclude_hold_id: int) -> bool:
    """Whether the real person (by the ID's blind index, whichever account's record books them)
    already has a registration or a live hold in this session."""
    active = (RegistrationStatus.BOOKED, RegistrationStatus.CHECKED_IN, RegistrationStatus.VISITED)
    # Holds first: a hold becomes a registration in one commit, so read in this order one of the
    # two queries sees it whenever that commit lands between them.
    if (
        Hold.objects.filter(_live_q(clock.now()), patient__id_index=patient_index, session_id=session_id)
        .exclude(id=exclude_hold_id)
        .exists()
    ):
        return True
    return Registration.objects.filter(
        patient__id_index=patient_index, session_id=session_id, status__in=active
    ).exists()
