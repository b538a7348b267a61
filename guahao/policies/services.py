"""Writes for booking restrictions (爽约 bans and manual bans by the hospital) and each hospital's
no-show and cancellation policy."""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from guahao import clock
from guahao.catalog.models import Hospital
from guahao.errors import Conflict, InvalidInput
from guahao.notifications.services import emit
from guahao.patients.idcard import identity_index, parse_id_number
from guahao.policies.models import Policy, Restriction


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
        lifted = Restriction.objects.filter(id=restriction_id, lifted_at__isnull=True).update(
            lifted_at=clock.now(), lifted_by=lifted_by[:150], lift_reason=reason[:100]
        )
        if lifted:
            emit("restriction.lifted", restriction_id=restriction_id)
    return bool(lifted)


def lift_restriction_by_staff(*, restriction_id: int, staff_username: str, reason: str) -> Restriction:
    """The console's lift: a reason is required, and lifting one already lifted is refused."""
    if not lift_restriction(restriction_id=restriction_id, lifted_by=staff_username, reason=reason, require_reason=True):
        raise Conflict("该限制已解除", code="restriction_already_lifted")
    return Restriction.objects.get(id=restriction_id)


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
