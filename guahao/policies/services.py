"""Writes for booking restrictions (爽约 bans and manual bans by the hospital), no-show marking and
the end of bans, and each hospital's no-show and cancellation policy. The rules themselves are in
policies/engine.py."""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from guahao import clock
from guahao.booking.models import Registration
from guahao.booking.services.common import lock_slot
from guahao.booking.states import RegistrationStatus, registration_sources
from guahao.catalog.models import Hospital
from guahao.db import atomic_retry
from guahao.errors import Conflict, InvalidInput
from guahao.notifications.services import emit
from guahao.patients.idcard import identity_index, parse_id_number
from guahao.policies import engine
from guahao.policies.models import Policy, Restriction
from guahao.scheduling.models import Session


def restrict_patient(
    *,
    hospital: Hospital,
    id_type: str,
    id_number: str,
    reason: str,
    until: dt.date,
    created_by: str = "",
) -> Restriction:
    """Ban a real person (by ID, whichever account they book from) until `until`, inclusive.
    Only the ID's blind index is kept. `created_by` is the staff member (empty for a rule's ban)."""
    info = parse_id_number(id_number, id_type=id_type)
    reason = reason.strip()
    if not reason:
        raise InvalidInput("请填写限制原因", code="restriction_reason_required")
    if until < clock.today():
        raise InvalidInput("限制截止日期不能早于今天", code="restriction_until_past")
    with transaction.atomic():
        restriction = Restriction.objects.create(
            hospital=hospital,
            patient_index=identity_index(info),
            reason=reason[:100],
            until=until,
            created_at=clock.now(),
            created_by=created_by[:150],
        )
        emit("restriction.created", restriction_id=restriction.id)
    return restriction


def lift_restriction(*, restriction_id: int, lifted_by: str = "", reason: str = "", require_reason: bool = False) -> bool:
    """Lift a ban (compare-and-set: only one not yet lifted), recording who and why. True when this
    call lifted it; False when it had already been lifted. Staff must give a reason
    (`require_reason`); a rule lifting its own ban need not."""
    reason = reason.strip()
    if require_reason and not reason:
        raise InvalidInput("请填写解除原因", code="lift_reason_required")
    with transaction.atomic():
        lifted = Restriction.objects.filter(id=restriction_id, lifted_at__isnull=True, ended_at__isnull=True).update(
            lifted_at=clock.now(), lifted_by=lifted_by[:150], lift_reason=reason[:100]
        )
        if lifted:
            emit("restriction.lifted", restriction_id=restriction_id, by="staff")
    return bool(lifted)


def lift_restriction_by_staff(*, restriction_id: int, staff_username: str, reason: str) -> Restriction:
    """The console's lift: a reason is required, and lifting one already lifted is refused."""
    if not lift_restriction(restriction_id=restriction_id, lifted_by=staff_username, reason=reason, require_reason=True):
        if Restriction.objects.filter(id=restriction_id, lifted_at__isnull=True).exists():
            raise Conflict("该限制已到期结束，无需解除", code="restriction_already_ended")
        raise Conflict("该限制已解除", code="restriction_already_lifted")
    return Restriction.objects.get(id=restriction_id)


def end_restrictions(*, today: dt.date) -> int:
    """The daily sweep: every ban whose last day (`until`) is before `today` and that staff have
    not lifted gets its `ended_at`, by compare-and-set, with restriction.lifted (by "expiry") in
    the same transaction, so the patient hears once that they may book again. Idempotent; returns
    how many it ended. (Booking never waits for it: a ban past `until` no longer refuses.)"""
    due = Restriction.objects.filter(until__lt=today, lifted_at__isnull=True, ended_at__isnull=True)
    ended = 0
    for restriction_id in due.order_by("id").values_list("id", flat=True):
        with transaction.atomic():
            if Restriction.objects.filter(
                id=restriction_id, until__lt=today, lifted_at__isnull=True, ended_at__isnull=True
            ).update(ended_at=clock.now()):
                emit("restriction.lifted", restriction_id=restriction_id, by="expiry")
                ended += 1
    return ended


def mark_no_shows(*, now: dt.datetime, limit: int = 500) -> int:
    """爽约: every BOOKED registration whose session ended more than its hospital's
    no_show_grace_minutes before `now` moves to NO_SHOW, each in its own transaction: the slot
    lock first (the booking lock order), a compare-and-set from BOOKED (so one checked in, visited
    or cancelled meanwhile is never touched), registration.no_show, and the no-show ban rule for
    its person. Sessions under 停诊 are left to the 停诊 handler. Idempotent; returns how many it
    marked (at most `limit` per hospital per call; the scheduler calls again)."""
    booked = Registration.objects.filter(
        status=RegistrationStatus.BOOKED, session__status=Session.Status.OPEN, session__ends_at__lt=now
    )
    marked = 0
    for hospital_id in booked.values_list("session__hospital_id", flat=True).distinct().order_by():
        grace = dt.timedelta(minutes=engine.policy_for(hospital_id).no_show_grace_minutes)
        due = (
            booked.filter(session__hospital_id=hospital_id, session__ends_at__lt=now - grace)
            .select_related("session", "patient")
            .order_by("session__ends_at", "id")[:limit]
        )
        for registration in due:

            def mark(registration: Registration = registration) -> int:
                lock_slot(registration.slot_id)
                moved = Registration.objects.filter(
                    id=registration.id,
                    status__in=registration_sources(RegistrationStatus.NO_SHOW, RegistrationStatus.BOOKED),
                ).update(status=RegistrationStatus.NO_SHOW, no_show_at=clock.now())
                if moved:
                    emit("registration.no_show", registration_id=registration.id)
                    engine.count_no_show(registration=registration)
                return moved

            marked += atomic_retry(mark)
    return marked


def ensure_policies(*, hospital_ids: list[int] | None) -> int:
    """Every hospital (of `hospital_ids`, or all) has its 爽约与退号规则 row, made with the defaults
    when missing. Idempotent (get_or_create on the one-to-one); returns how many it made."""
    hospitals = Hospital.objects.filter(policy__isnull=True)
    if hospital_ids is not None:
        hospitals = hospitals.filter(id__in=hospital_ids)
    made = 0
    for hospital_id in hospitals.values_list("id", flat=True):
        with transaction.atomic():
            _, created = Policy.objects.get_or_create(hospital_id=hospital_id)
        made += created
    return made
