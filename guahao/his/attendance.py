"""Check-in and visit (取号 / 就诊) as the hospital's HIS reports them: guahao polls the query
operation for the day's registrations, and the HIS may also call a signed callback
(POST /api/v1/his/{hospital_code}/events). Both end in the same move, booking's mark_attendance: a
compare-and-set from the states REGISTRATION_TRANSITIONS allows, with its outbox event. Applying a
report twice changes nothing the second time.

A registration the HIS says it cancelled while guahao still has it BOOKED is not changed here: a
silent cancel would owe the patient a refund nobody started. It is logged as an error for staff.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from guahao import clock
from guahao.booking import services as booking
from guahao.booking.models import Registration
from guahao.booking.states import RegistrationStatus
from guahao.catalog.models import Hospital
from guahao.errors import Conflict, InvalidInput, Unauthenticated
from guahao.his import services as his_services
from guahao.his import wire
from guahao.his.base import HisRefused, HisTimeout
from guahao.his.models import HisCallbackNonce, HisConnection

log = logging.getLogger("guahao.his.attendance")

# The HIS's status → the moves that reach it here, in order (a visit implies a check-in).
_MOVES: dict[str, tuple[RegistrationStatus, ...]] = {
    "checked_in": (RegistrationStatus.CHECKED_IN,),
    "visited": (RegistrationStatus.CHECKED_IN, RegistrationStatus.VISITED),
}
_RANK = {RegistrationStatus.BOOKED: 0, RegistrationStatus.CHECKED_IN: 1, RegistrationStatus.VISITED: 2}
# A nonce is remembered while its timestamp can still pass the ±5 minute check.
NONCE_RETENTION = dt.timedelta(seconds=2 * wire.MAX_SKEW_SECONDS)
MAX_EVENTS = 500


def record_his_status(*, registration_id: int, status: str) -> int:
    """Move one registration to where the HIS says the patient is ("checked_in", "visited",
    "cancelled", "booked"). Returns how many moves it made (0 when it is there already)."""
    current = Registration.objects.values_list("status", flat=True).filter(id=registration_id).first()
    if current is None:
        return 0
    if status == "cancelled":
        if current == RegistrationStatus.BOOKED:
            # Not ours to cancel silently: the patient paid, and a refund must be decided by staff.
            log.error(
                "HIS cancelled a registration guahao still has booked; left for staff",
                extra={"registration_id": registration_id},
            )
        return 0
    moved = 0
    for target in _MOVES.get(status, ()):
        if current in _RANK and _RANK[RegistrationStatus(current)] >= _RANK[target]:
            continue
        try:
            current = booking.mark_attendance(registration_id=registration_id, status=target).status
            moved += 1
        except Conflict:
            # Moved meanwhile (another poll, the callback, staff) or off the path (no-show, cancelled).
            current = Registration.objects.values_list("status", flat=True).get(id=registration_id)
            if current not in _RANK:
                log.warning(
                    "HIS reports attendance for a registration that is no longer booked",
                    extra={"registration_id": registration_id, "his_status": status, "status": current},
                )
                return moved
    return moved


def refresh_attendance(*, hospital: Hospital, day: dt.date) -> int:
    """Ask the HIS where each of the day's BOOKED and CHECKED_IN registrations of `hospital` stands
    and record its check-ins and visits. The HIS not answering ends the round (the next one asks
    again); returns how many moves were made."""
    rows = list(
        Registration.objects.filter(
            session__hospital_id=hospital.id,
            session__date=day,
            status__in=(RegistrationStatus.BOOKED, RegistrationStatus.CHECKED_IN),
        )
        .order_by("id")
        .values_list("id", "hold_id", "registration_no")
    )
    if not rows:
        return 0
    his = his_services.adapter_for(hospital.id)
    moved = 0
    for registration_id, hold_id, registration_no in rows:
        try:
            record = his.query_registration(hold_id=hold_id)
        except HisTimeout:
            log.warning("attendance poll stopped: the HIS did not answer", extra={"hospital_id": hospital.id})
            break
        except HisRefused as exc:
            log.warning("attendance query refused", extra={"registration_id": registration_id, "reason": exc.reason})
            continue
        if record is None:
            continue  # an HIS without the query (the local pool) or without this registration
        if record.registration_no and record.registration_no != registration_no:
            log.error(
                "HIS registration number differs from ours; not recorded",
                extra={"registration_id": registration_id, "his_registration_no": record.registration_no},
            )
            continue
        moved += record_his_status(registration_id=registration_id, status=record.status)
    return moved


# --- the HIS's signed callback ------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackResult:
    received: int
    moved: int
    unknown: list[int]

    def as_dict(self) -> dict:
        return {"received": self.received, "moved": self.moved, "unknown": self.unknown}


def callback_secret(hospital_code: str) -> tuple[Hospital, str] | None:
    """The hospital and the shared secret its HIS signs callbacks with; None when the hospital
    has no enabled HIS connection (then every callback is refused)."""
    connection = (
        HisConnection.objects.select_related("hospital")
        .filter(hospital__code=hospital_code, hospital__is_active=True, enabled=True)
        .exclude(mode=HisConnection.Mode.LOCAL_POOL)
        .first()
    )
    if connection is None or not connection.secret:
        return None
    return connection.hospital, connection.secret


def receive_events(*, hospital_code: str, headers: dict[str, str], target: str, body: bytes) -> CallbackResult:
    """The callback POST /api/v1/his/{hospital_code}/events: a JSON list of
    {hold_id, registration_no, status, at}. Verified with the hospital's secret (wire.verify_request)
    before anything is read or written; a nonce seen before is refused. Each event is recorded as
    record_his_status does, so a repeated event changes nothing. Raises Unauthenticated (401) for
    an unknown hospital, a bad signature or a replay, InvalidInput (400) for a malformed body."""
    found = callback_secret(hospital_code)
    if found is None:
        raise Unauthenticated("该医院未配置医院系统连接", code="his_not_connected")
    hospital, secret = found
    verdict = wire.verify_request(secret, headers, method="POST", target=target, body=body)
    if not verdict.ok:
        log.warning("HIS callback refused", extra={"hospital_id": hospital.id, "reason": verdict.reason})
        raise Unauthenticated("签名校验失败", code=wire.Code.BAD_SIGNATURE)
    events = _parse_events(body)
    nonce = {k.lower(): v for k, v in headers.items()}[wire.NONCE_HEADER.lower()]
    try:
        with transaction.atomic():
            HisCallbackNonce.objects.create(hospital=hospital, nonce=nonce, seen_at=clock.now())
    except IntegrityError as exc:
        log.warning("HIS callback replayed", extra={"hospital_id": hospital.id})
        raise Unauthenticated("重复的请求（nonce 已使用）", code=wire.Code.BAD_SIGNATURE) from exc
    HisCallbackNonce.objects.filter(seen_at__lt=clock.now() - NONCE_RETENTION).delete()

    known = dict(
        Registration.objects.filter(
            session__hospital_id=hospital.id, hold_id__in=[e["hold_id"] for e in events]
        ).values_list("hold_id", "id")
    )
    numbers = dict(Registration.objects.filter(id__in=known.values()).values_list("id", "registration_no"))
    moved, unknown = 0, []
    for event in events:
        registration_id = known.get(event["hold_id"])
        if registration_id is None or (event["registration_no"] and numbers[registration_id] != event["registration_no"]):
            unknown.append(event["hold_id"])
            continue
        moved += record_his_status(registration_id=registration_id, status=event["status"])
    if unknown:
        log.warning("HIS callback names registrations we do not have", extra={"hospital_id": hospital.id, "hold_ids": unknown[:20]})
    return CallbackResult(received=len(events), moved=moved, unknown=unknown)


def _parse_events(body: bytes) -> list[dict]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidInput("请求体不是 JSON", code=wire.Code.BAD_REQUEST) from exc
    if not isinstance(data, list) or len(data) > MAX_EVENTS:
        raise InvalidInput(f"请求体须为事件数组（至多 {MAX_EVENTS} 条）", code=wire.Code.BAD_REQUEST)
    events = []
    for item in data:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("hold_id"), int)
            or item.get("status") not in ("booked", "checked_in", "visited", "cancelled")
        ):
            raise InvalidInput("事件须含 hold_id（整数）与 status（booked/checked_in/visited/cancelled）", code=wire.Code.BAD_REQUEST)
        events.append({"hold_id": item["hold_id"], "registration_no": str(item.get("registration_no") or ""), "status": item["status"]})
    return events
