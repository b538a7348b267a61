"""Writes for booking restrictions (爽约 bans and manual bans by the hospital)."""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from guahao import clock
from guahao.catalog.models import Hospital
from guahao.notifications.services import emit
from guahao.patients.idcard import identity_index, parse_id_number
from guahao.policies.models import Restriction


def restrict_patient(*, hospital: Hospital, id_type: str, id_number: str, reason: str, until: dt.date) -> Restriction:
    """Ban a real person (by ID, whichever account they book from) until `until`, inclusive."""
    info = parse_id_number(id_number, id_type=id_type)
    with transaction.atomic():
        restriction = Restriction.objects.create(
            hospital=hospital,
            patient_index=identity_index(info),
            reason=reason,
            until=until,
            created_at=clock.now(),
        )
        emit("restriction.created", restriction_id=restriction.id)
    return restriction


def lift_restriction(*, restriction_id: int) -> None:
    with transaction.atomic():
        lifted = Restriction.objects.filter(id=restriction_id, lifted_at__isnull=True).update(lifted_at=clock.now())
        if lifted:
            emit("restriction.lifted", restriction_id=restriction_id)
