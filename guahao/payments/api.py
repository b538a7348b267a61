"""Payment provider callbacks (mounted at /api/v1/payments)."""

from __future__ import annotations

import logging

from django.http import HttpRequest
from ninja import Router, Schema, Status

from guahao.errors import NotFound
from guahao.payments import services
from guahao.payments.providers.base import BadNotification

log = logging.getLogger("guahao.payments.api")

router = Router(tags=["支付"])


class NotifyAnswer(Schema):
    code: str
    message: str


@router.post(
    "/notify/{provider_name}",
    auth=None,
    response={200: NotifyAnswer, 401: NotifyAnswer, 404: NotifyAnswer},
    summary="支付机构异步通知（支付成功、退款成功）",
)
def notify(request: HttpRequest, provider_name: str) -> Status:
    """Called by the payment provider, not by patients: the signature is the authentication. Any
    answer but 2xx makes the provider send it again, so duplicates are answered 200 too."""
    try:
        recorded = services.record_notification(
            provider_name=provider_name, headers=dict(request.headers), body=request.body
        )
    except services.UnknownProvider as exc:
        raise NotFound("未知的支付机构", code="unknown_provider") from exc
    except BadNotification as exc:
        log.warning("payment notification rejected", extra={"provider": provider_name, "reason": str(exc)})
        return Status(401, {"code": "bad_signature", "message": "通知验签失败"})
    if recorded.newly_settled:
        _finish_inline(recorded)
    return Status(200, {"code": "SUCCESS", "message": "成功"})


def _finish_inline(recorded: services.RecordedNotification) -> None:
    """Carry the news on at once so the patient need not wait for the worker. The outbox event
    written with the state change makes the worker do the same if this fails, so a failure here is
    logged and the provider still gets its 200."""
    try:
        # Imported here: booking depends on payments, not the other way round.
        if recorded.kind == "trade":
            from guahao.booking.services import complete_paid_hold

            complete_paid_hold(payment_id=recorded.payment_id)
        elif recorded.refund_id is not None:
            from guahao.booking.services import finish_refund

            finish_refund(refund_id=recorded.refund_id)
    except Exception:  # the outbox worker finishes it; the notification itself is recorded
        log.exception(
            "finishing after a notification failed; left to the worker",
            extra={"kind": recorded.kind, "payment_id": recorded.payment_id, "refund_id": recorded.refund_id},
        )
