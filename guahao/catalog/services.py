"""Writes for the catalog: publishing and acknowledging notices."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Max

from guahao import clock
from guahao.catalog.models import Hospital, Notice, NoticeAck
from guahao.errors import Conflict, InvalidInput, NotFound

if TYPE_CHECKING:
    from guahao.patients.models import Account


@transaction.atomic
def acknowledge_notice(*, account: Account, notice_id: int) -> NoticeAck:
    """Record that the account has read the current version of a notice. Idempotent: a second ack
    returns the first one. Acknowledging a superseded version is refused, so a patient never
    "confirms" text that is no longer in force."""
    notice = Notice.objects.filter(id=notice_id, is_active=True, hospital__is_active=True).first()
    if notice is None:
        raise NotFound("须知不存在或已停用", code="notice_not_found")
    newer = Notice.objects.filter(
        hospital_id=notice.hospital_id, kind=notice.kind, is_active=True, version__gt=notice.version
    )
    if newer.exists():
        raise Conflict("该须知已更新，请阅读并确认最新版本", code="notice_superseded")
    ack, _ = NoticeAck.objects.get_or_create(notice=notice, account=account, defaults={"acked_at": clock.now()})
    return ack


@transaction.atomic
def publish_notice(
    *, hospital: Hospital, kind: str, title: str, body: str, requires_ack: bool = True
) -> Notice:
    """Publish a new version of a notice kind; older versions stop being in force. Patients must
    acknowledge the new version again."""
    if kind not in Notice.Kind.values:
        raise InvalidInput("须知类型不正确", code="notice_kind_invalid")
    latest = Notice.objects.filter(hospital=hospital, kind=kind).aggregate(v=Max("version"))["v"] or 0
    Notice.objects.filter(hospital=hospital, kind=kind, is_active=True).update(is_active=False)
    return Notice.objects.create(
        hospital=hospital,
        kind=kind,
        version=latest + 1,
        title=title,
        body=body,
        requires_ack=requires_ack,
        is_active=True,
    )
