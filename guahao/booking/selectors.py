"""Reads for booking: an account sees only its own holds and registrations (with their refunds),
and the doctors it has booked before (复诊)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, Max, Q, QuerySet

from guahao import clock
from guahao.booking.models import Hold, Registration
from guahao.booking.states import ACTIVE_REGISTRATION_STATES, HoldState, RegistrationStatus
from guahao.catalog.models import Doctor, Hospital
from guahao.errors import NotFound
from guahao.patients.models import Account
from guahao.payments.models import Refund
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


def live_holds_of(*, account: Account, now: dt.datetime | None = None) -> list[Hold]:
    """The account's holds still waiting for the patient (锁号中 or 支付中, lock not run out),
    soonest expiry first, with what their display needs loaded. A paid hold being registered
    (REGISTERING) is not among them: it shows as its outcome."""
    now = now or clock.now()
    return list(
        Hold.objects.filter(account=account, state__in=(HoldState.HELD, HoldState.PAYING), expires_at__gt=now)
        .select_related(*_HOLD_RELATED)
        .order_by("expires_at", "id")
    )


def registering_holds_of(*, account: Account) -> list[Hold]:
    """The account's paid holds whose registration the HIS has not confirmed yet (挂号中): each
    ends as a registration or a full refund, and until then the patient should see it."""
    return list(
        Hold.objects.filter(account=account, state=HoldState.REGISTERING)
        .select_related(*_HOLD_RELATED)
        .order_by("id")
    )


def registrations_of(*, account: Account, status: str | None = None) -> QuerySet[Registration]:
    regs = Registration.objects.filter(account=account).select_related(
        "hold", "slot", "session__department", "session__doctor", "session__hospital", "patient"
    )
    if status:
        regs = regs.filter(status=status)
    return regs.order_by("-booked_at")


def get_registration_for_account(*, account: Account, registration_id: int) -> Registration:
    reg = registrations_of(account=account).filter(id=registration_id).first()
    if reg is None:
        raise NotFound("挂号记录不存在", code="registration_not_found")
    return reg


# --- refunds of registrations ---------------------------------------------------------------------

# A refund as the patient reads it: a failed one is waiting for staff, not lost.
_REFUND_LABELS = {
    Refund.State.PROCESSING: "退款中",
    Refund.State.SUCCEEDED: "已退款",
    Refund.State.FAILED: "退款处理中（医院人工处理）",
}


@dataclass(frozen=True)
class RegistrationRefund:
    amount_fen: int
    state: str  # processing / succeeded / failed (Refund.State)
    state_label: str
    reason: str
    requested_at: dt.datetime
    finished_at: dt.datetime | None  # when the money was back; None while it is not


def _refund_view(refund: Refund) -> RegistrationRefund:
    return RegistrationRefund(
        amount_fen=refund.amount_fen,
        state=refund.state,
        state_label=_REFUND_LABELS.get(Refund.State(refund.state), refund.get_state_display()),
        reason=refund.reason,
        requested_at=clock.local(refund.created_at),
        finished_at=clock.local(refund.succeeded_at) if refund.succeeded_at else None,
    )


def refunds_of(registrations: Iterable[Registration]) -> dict[int, RegistrationRefund]:
    """The refund of each registration that has one (of its hold's winning payment; at most one,
    as the refund number is derived from the order number), by registration id. One query."""
    by_payment = {r.hold.payment_id: r.id for r in registrations if r.hold.payment_id is not None}
    found: dict[int, RegistrationRefund] = {}
    for refund in Refund.objects.filter(payment_id__in=by_payment).order_by("created_at", "id"):
        found[by_payment[refund.payment_id]] = _refund_view(refund)
    return found


def refund_of(registration: Registration) -> RegistrationRefund | None:
    return refunds_of([registration]).get(registration.id)


# --- doctors seen before (复诊) --------------------------------------------------------------------


def recent_doctors(account: Account, *, hospital: Hospital | None = None, limit: int = 10) -> list[Doctor]:
    """The distinct doctors of the account's registrations that were not cancelled (预约成功, 已取号,
    已就诊, 爽约), most recently booked first, each with its department loaded and
    `last_booked_at` set. Only doctors patients can still book (doctor, department and hospital
    active); with `hospital`, that hospital's only. One query."""
    doctors = Doctor.objects.filter(
        sessions__registrations__account=account,
        sessions__registrations__status__in=ACTIVE_REGISTRATION_STATES,
        is_active=True,
        department__is_active=True,
        hospital__is_active=True,
    )
    if hospital is not None:
        doctors = doctors.filter(hospital=hospital)
    return list(
        doctors.annotate(last_booked_at=Max("sessions__registrations__booked_at"))
        .select_related("department")
        .order_by("-last_booked_at", "id")[:limit]
    )


def cancel_deadline(registration: Registration, *, hours: int) -> dt.datetime:
    """Online cancellation closes `hours` before the registration's own time window (分时段), not
    before the session's start."""
    return registration.slot.window_start - dt.timedelta(hours=hours)


# However late a patient pays, the HIS gets this long to answer before the payment is refunded.
REGISTER_GRACE = dt.timedelta(minutes=5)


def registering_cutoff(hold: Hold) -> dt.datetime:
    """When a REGISTERING hold whose HIS outcome is still unknown is given up (refunded, and the
    HIS asked to cancel): the release rule's minutes before the hold's time window starts, but
    never sooner than REGISTER_GRACE after the hold began registering (its last update), nor later
    than the window's start. (The window, not the session: a started session's later windows are
    booked too.)"""
    window_start = hold.slot.window_start
    by_rule = window_start - dt.timedelta(minutes=release_rule_for(hold.session).register_cutoff_minutes)
    return max(by_rule, min(hold.updated_at + REGISTER_GRACE, window_start))


def _live_q(now: dt.datetime) -> Q:
    return Q(state__in=(HoldState.HELD, HoldState.PAYING), expires_at__gt=now) | Q(state=HoldState.REGISTERING)


def hold_counts(*, account: Account, now: dt.datetime, lock: bool = False) -> tuple[int, int]:
    """(live holds, holds made today) for the per-account caps, in one query. `lock`: inside a
    transaction, under the account's row lock, so one account's parallel requests count one after
    the other (SQLite's single writer already serialises them)."""
    start = clock.at_local(clock.local(now).date(), dt.time(0, 0))
    if not lock:
        counts = Hold.objects.filter(account=account).aggregate(
            live=Count("id", filter=_live_q(now)), today=Count("id", filter=Q(created_at__gte=start))
        )
        return counts["live"], counts["today"]

    # The account's row lock first, then the counts in a statement of their own: under READ
    # COMMITTED only a statement that starts after the lock is granted sees the holds that the
    # lock's previous owner committed (a subquery of the locking statement would not).
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT 1 FROM patients_account WHERE id = %s FOR UPDATE", [account.id])
        cursor.execute(
            """
            SELECT
              count(*) FILTER (WHERE (state IN ('held', 'paying') AND expires_at > %(now)s) OR state = 'registering'),
              count(*) FILTER (WHERE created_at >= %(start)s)
            FROM booking_hold WHERE account_id = %(account)s
            """,
            {"now": adapt(now), "start": adapt(start), "account": account.id},
        )
        live, today = cursor.fetchone()
    return live, today


def _digests(patient_index: str | Sequence[str]) -> list[str]:
    # One digest, or the person's digests under every index key while keys rotate.
    return [patient_index] if isinstance(patient_index, str) else list(patient_index)


def patient_has_booking_in_session(
    *, patient_index: str | Sequence[str], session_id: int, exclude_hold_id: int
) -> bool:
    """Whether the real person (by the ID's blind index, whichever account's record books them)
    already has a registration or a live hold in this session."""
    active = (RegistrationStatus.BOOKED, RegistrationStatus.CHECKED_IN, RegistrationStatus.VISITED)
    digests = _digests(patient_index)
    # Holds first: a hold becomes a registration in one commit, so read in this order one of the
    # two queries sees it whenever that commit lands between them.
    if (
        Hold.objects.filter(_live_q(clock.now()), patient__id_index__in=digests, session_id=session_id)
        .exclude(id=exclude_hold_id)
        .exists()
    ):
        return True
    return Registration.objects.filter(
        patient__id_index__in=digests, session_id=session_id, status__in=active
    ).exists()


def person_bookings_on(
    *, hospital_id: int, patient_index: str | Sequence[str], day: dt.date, now: dt.datetime,
    exclude_hold_id: int,
) -> list[int]:
    """The department of each booking the real person (whichever account's record books them)
    has at the hospital on visit date `day`: live holds with the person chosen and registrations
    not cancelled, each once (a hold and the registration it became are one booking)."""
    digests = _digests(patient_index)
    holds = (
        Hold.objects.filter(_live_q(now), patient__id_index__in=digests, session__hospital_id=hospital_id, session__date=day)
        .exclude(id=exclude_hold_id)
        .values_list("id", "session__department_id")
    )
    # Holds first, as in patient_has_booking_in_session: a hold that registers between the two
    # reads is seen by one of them, and keyed by hold it is counted once.
    found = dict(holds)
    found.update(
        Registration.objects.filter(
            patient__id_index__in=digests,
            session__hospital_id=hospital_id,
            session__date=day,
            status__in=ACTIVE_REGISTRATION_STATES,
        ).values_list("hold_id", "session__department_id")
    )
    return list(found.values())


def earliest_live_hold_expiry(*, account: Account, now: dt.datetime) -> dt.datetime | None:
    """When the account's first waiting hold (锁号中/支付中) runs out, if it has one."""
    return (
        Hold.objects.filter(account=account, state__in=(HoldState.HELD, HoldState.PAYING), expires_at__gt=now)
        .order_by("expires_at")
        .values_list("expires_at", flat=True)
        .first()
    )
