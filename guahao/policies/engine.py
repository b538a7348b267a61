"""The policy engine (爽约与退号规则 and the per-person limits): the checks booking makes when a
visiting patient is chosen, and the bans earned by no-shows and by the patient's own cancels.

Everything here follows the real person (the ID's blind index), so a limit or a ban holds across
every account and family-member record that books that person. Defaults are the rules Beijing
publishes; each hospital edits its own in the console (Policy). Every refusal names its rule and
says when it stops refusing."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from django.db import connection
from django.db.models import QuerySet

from guahao import clock
from guahao.booking import selectors as booking_selectors
from guahao.booking.models import Registration
from guahao.booking.states import RegistrationStatus
from guahao.catalog.models import Hospital
from guahao.errors import Conflict, Forbidden
from guahao.notifications.services import emit
from guahao.patients.selectors import person_indexes
from guahao.policies.models import Policy, Restriction
from guahao.policies.selectors import active_restriction


def policy_for(hospital_id: int) -> Policy:
    """The hospital's policy, or the defaults (unsaved) while the console has not made its row."""
    return Policy.objects.filter(hospital_id=hospital_id).first() or Policy(hospital_id=hospital_id)


def _advisory_lock(name: str) -> None:
    """A transaction-scoped PostgreSQL advisory lock on `name`; SQLite runs one writer at a time."""
    if connection.vendor != "postgresql":
        return
    key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def lock_person_on_date(*, patient_index: str, day: dt.date) -> None:
    """Queue confirmations of one real person for one visit date, taken before any row lock. It
    also covers one session of that date, so two accounts confirming the same person cannot both
    pass the duplicate check or the daily limits before either has written."""
    _advisory_lock(f"person-day:{patient_index}:{day.isoformat()}")


# --- the checks made when a patient is chosen ----------------------------------------------------


def _day(value: dt.date) -> str:
    return f"{value:%Y年%m月%d日}"


def restriction_refusal(restriction: Restriction) -> Forbidden:
    """What a patient under a ban is told: the rule, and the last day of the ban."""
    until = restriction.until
    again = f"，{until + dt.timedelta(days=1):%m月%d日}起可重新预约"
    detail = {"rule": restriction.rule, "until": until.isoformat()}
    code = _RESTRICTION_CODES.get(restriction.rule)
    if code is not None:  # a rule's ban: its reason names the rule ("90天内爽约3次")
        return Forbidden(f"就诊人近{restriction.reason}，暂停预约至{_day(until)}{again}", code=code, **detail)
    return Forbidden(
        f"该就诊人因「{restriction.reason}」被限制预约至 {_day(until)}{again}", code="patient_restricted", **detail
    )


_RESTRICTION_CODES = {
    Restriction.Rule.NO_SHOW: "patient_restricted_no_show",
    Restriction.Rule.CANCEL: "patient_restricted_cancel",
}


def check_not_restricted(*, hospital: Hospital, patient_index: str | Sequence[str], today: dt.date) -> None:
    """Raise Forbidden (the rule and until when) when the person is under a ban at the hospital."""
    restriction = active_restriction(hospital=hospital, patient_index=patient_index, today=today)
    if restriction is not None:
        raise restriction_refusal(restriction)


def check_daily_limits(
    *, hospital_id: int, patient_index: str | Sequence[str], day: dt.date, department_id: int, department_name: str,
    exclude_hold_id: int, now: dt.datetime,
) -> None:
    """The per-person caps of one visit date: at most max_per_day bookings, and
    max_per_department_per_day in one department (live holds with the person chosen count, from
    any account). Call under lock_person_on_date, in the transaction that attaches the person."""
    policy = policy_for(hospital_id)
    departments = booking_selectors.person_bookings_on(
        hospital_id=hospital_id, patient_index=patient_index, day=day, now=now, exclude_hold_id=exclude_hold_id
    )
    per_day, per_department = policy.max_per_day, policy.max_per_department_per_day
    if per_day and len(departments) >= per_day:
        raise Conflict(
            f"同一就诊人每天最多预约{per_day}个号（每日挂号上限），该就诊人{day:%m月%d日}已有{len(departments)}个预约或待支付锁号；"
            "取消其中一个后可再预约，或选择其他日期",
            code="patient_daily_limit",
            limit=per_day,
        )
    if per_department and departments.count(department_id) >= per_department:
        raise Conflict(
            f"同一就诊人同一科室每天最多预约{per_department}个号（科室每日挂号上限），该就诊人{day:%m月%d日}已有{department_name}的预约或待支付锁号；"
            "取消后可再预约，或选择其他日期",
            code="patient_department_limit",
            limit=per_department,
        )


# --- bans earned by no-shows and cancels --------------------------------------------------------


def _ban_if_earned(
    *, registration: Registration, rule: str, limit: int, window_days: int, ban_days: int,
    events: QuerySet[Registration], at: str, label: str,
) -> Restriction | None:
    """Ban the registration's person when `events` (their registrations at this hospital, `at`
    naming each one's moment) number `limit` within `window_days` and after their last ban of
    this rule."""
    if not limit:
        return None  # the hospital has switched this rule off
    hospital_id = registration.session.hospital_id
    # The person under every index key, current first (records may differ while keys rotate).
    person = person_indexes(registration.patient)
    patient_index = person[0]
    # One evaluation per person at a time: two events of one person committing together would
    # each miss the other's, and neither would ban.
    _advisory_lock(f"person-bans:{hospital_id}:{patient_index}")
    now = clock.now()
    counted = events.filter(
        session__hospital_id=hospital_id, patient__id_index__in=person, **{f"{at}__gte": now - dt.timedelta(days=window_days)}
    )
    last_ban = (
        Restriction.objects.filter(hospital_id=hospital_id, patient_index__in=person, rule=rule)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    if last_ban is not None:
        counted = counted.filter(**{f"{at}__gt": last_ban})
    if counted.count() < limit:
        return None
    today = clock.local(now).date()
    restriction = Restriction.objects.create(
        hospital_id=hospital_id,
        patient_index=patient_index,
        rule=rule,
        account_id=registration.account_id,
        reason=f"{window_days}天内{label}{limit}次",
        until=today + dt.timedelta(days=ban_days - 1),  # `until` is inclusive: ban_days days from today
        created_at=now,
    )
    emit("restriction.created", restriction_id=restriction.id)
    return restriction


def count_no_show(*, registration: Registration) -> Restriction | None:
    """After `registration` became NO_SHOW, in that transaction: ban its person for
    no_show_ban_days when they have no_show_limit no-shows within no_show_window_days, counting
    only those after their last no-show ban (a lifted or ended ban is not earned again by the same
    no-shows). Returns the ban it made, if any (restriction.created is emitted)."""
    policy = policy_for(registration.session.hospital_id)
    return _ban_if_earned(
        registration=registration,
        rule=Restriction.Rule.NO_SHOW,
        limit=policy.no_show_limit,
        window_days=policy.no_show_window_days,
        ban_days=policy.no_show_ban_days,
        events=Registration.objects.filter(status=RegistrationStatus.NO_SHOW),
        at="no_show_at",
        label="爽约",
    )


def count_patient_cancel(*, registration: Registration) -> Restriction | None:
    """After the patient cancelled `registration` themselves, in that transaction: as
    count_no_show, for cancel_limit own cancels of booked registrations within cancel_window_days
    (staff cancels and 停诊 do not count)."""
    policy = policy_for(registration.session.hospital_id)
    return _ban_if_earned(
        registration=registration,
        rule=Restriction.Rule.CANCEL,
        limit=policy.cancel_limit,
        window_days=policy.cancel_window_days,
        ban_days=policy.cancel_ban_days,
        events=Registration.objects.filter(cancelled_by_patient=True),
        at="cancelled_at",
        label="退号",
    )
