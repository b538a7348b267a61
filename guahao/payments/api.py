"""Payment provider callbacks (mounted at /api/v1/payments)."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from ninja import Router

from guahao.payments import services
from guahao.payments.providers import NoMerchant, for_merchant, merchant_by_key
from guahao.payments.providers.base import BadNotification

log = logging.getLogger("guahao.payments.api")

router = Router(tags=["支付"])

# Each provider's own reply form: WeChat reads the status and a JSON {code, message}, Alipay the
# plain-text body "success" or "fail"; an unknown merchant gets plain text.
_PROVIDER_REPLY = {
    "application/json": {
        "schema": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}
    },
    "text/plain": {"schema": {"type": "string"}},
}
_REPLIES = {200: "已收到", 400: "通知无效（支付宝）", 401: "验签失败（微信支付）", 404: "未知商户"}


@router.post(
    "/notify/{provider_name}/{merchant_key}",
    auth=None,
    summary="支付机构异步通知（支付成功、退款结果）",
    openapi_extra={
        "requestBody": {"content": {"application/json": {}, "application/x-www-form-urlencoded": {}}},
        "responses": {status: {"description": text, "content": _PROVIDER_REPLY} for status, text in _REPLIES.items()},
    },
)
def notify(request: HttpRequest, provider_name: str, merchant_key: str) -> HttpResponse:
    """Called by the payment provider, not by patients: the signature is the authentication. The
    reply is in the provider's own form (WeChat reads the status, Alipay the body "success"); any
    other reply makes it send again, so duplicates are answered as received too."""
    try:
        merchant = merchant_by_key(provider_name, merchant_key)
    except NoMerchant:
        return HttpResponse("unknown merchant", status=404, content_type="text/plain")
    gateway = for_merchant(merchant)
    try:
        recorded = services.record_notification(
            provider_name=provider_name, merchant_key=merchant_key, headers=dict(request.headers), body=request.body
        )
    except BadNotification as exc:
        log.warning(
            "payment notification rejected",
            extra={"provider": provider_name, "merchant_key": merchant_key, "reason": str(exc)},
        )
        return _reply(gateway.notification_reply(ok=False))
    if recorded.newly_settled:
        _finish_inline(recorded)
    return _reply(gateway.notification_reply(ok=True))


def _reply(answer: tuple[int, str, bytes]) -> HttpResponse:
    status, content_type, body = answer
    return HttpResponse(body, status=status, content_type=content_type)


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
