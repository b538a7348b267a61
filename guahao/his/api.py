"""The HIS's callback to guahao (mounted at /api/v1/his): check-ins and visits as they happen."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Schema, Status

from guahao.his import attendance

router = Router(tags=["医院系统"])


class EventsAnswer(Schema):
    received: int
    moved: int
    unknown: list[int]


class ErrorAnswer(Schema):
    code: str
    message: str


@router.post(
    "/his/{hospital_code}/events",
    auth=None,
    response={200: EventsAnswer, 400: ErrorAnswer, 401: ErrorAnswer},
    summary="医院系统回调：取号、就诊状态",
)
def his_events(request: HttpRequest, hospital_code: str) -> Status:
    """Called by the hospital's HIS, not by patients: the request signature (X-His-* headers,
    HMAC-SHA256 with the hospital's shared secret over the exact body) is the authentication. The
    body is a JSON array of {hold_id, registration_no, status, at}; a repeated event is answered
    200 and changes nothing; `unknown` lists the hold ids guahao has no registration for."""
    result = attendance.receive_events(
        hospital_code=hospital_code,
        headers=dict(request.headers),
        target=request.get_full_path(),
        body=request.body,
    )
    return Status(200, result.as_dict())
