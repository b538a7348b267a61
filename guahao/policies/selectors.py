from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from guahao.catalog.models import Hospital
from guahao.policies.models import Restriction


def active_restriction(
    *, hospital: Hospital, patient_index: str | Sequence[str], today: dt.date
) -> Restriction | None:
    """The ban in force on this real person at this hospital today, if any (the longest one).
    `patient_index` may list the person's digests under every index key (keys rotating)."""
    digests = [patient_index] if isinstance(patient_index, str) else list(patient_index)
    return (
        Restriction.objects.filter(
            hospital=hospital, patient_index__in=digests, until__gte=today, lifted_at__isnull=True, ended_at__isnull=True
        )
        .order_by("-until")
        .first()
    )
