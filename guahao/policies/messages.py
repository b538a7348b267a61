"""What a patient is told about a booking restriction (暂停预约 and its end)."""

from __future__ import annotations

from guahao import pii
from guahao.notifications.messaging import Composed
from guahao.notifications.models import Topic
from guahao.patients.models import Patient
from guahao.policies.models import Restriction


def _recipients(restriction: Restriction) -> list[Patient]:
    """The account whose booking earned the ban; for a ban staff set, every account holding the
    person as 本人. One record per account (its own copy of the person's name)."""
    people = Patient.objects.filter(id_index=restriction.patient_index)
    account_id = getattr(restriction, "account_id", None)
    people = people.filter(account_id=account_id) if account_id else people.filter(relation=Patient.Relation.SELF, removed_at__isnull=True)
    chosen: dict[int, Patient] = {}
    for person in people.order_by("id"):
        chosen.setdefault(person.account_id, person)
    return list(chosen.values())


def compose(topic: str, payload: dict) -> list[Composed] | None:
    if topic not in (Topic.BAN_APPLIED, Topic.BAN_LIFTED):
        return None
    restriction = Restriction.objects.select_related("hospital").get(id=payload["restriction_id"])
    hospital = restriction.hospital
    base = {
        "医院": hospital.short_name or hospital.name,
        "限制原因": restriction.reason,
        "限制至": f"{restriction.until:%Y年%m月%d日}",
        "客服电话": hospital.service_phone or "",
    }
    return [
        Composed(person.account_id, hospital.id, topic, {**base, "就诊人": pii.mask_name(person.name)}, "")
        for person in _recipients(restriction)
    ]
