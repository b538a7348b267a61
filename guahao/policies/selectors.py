from __future__ import annotations

import datetime as dt

from guahao.catalog.models import Hospital
from guahao.policies.models import Restriction


def active_restriction(*, hospital: Hospital, patient_index: str, today: dt.date) -> Restriction | None:
    """The ban in force on this real person at this hospital today, if any (the longest one)."""
    return (
        Restriction.objects.filter(
            hospital=hospital, patient_index=patient_index, until__gte=today, lifted_at__isnull=True, ended_at__isnull=True
        )
        .order_by("-until")
        .first()
    )
