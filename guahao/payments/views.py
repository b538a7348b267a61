"""The sandbox cashier page. It stands for the payment provider's own site (where a patient confirms
a WeChat payment), not for a guahao page: that is why it talks to the sandbox provider directly and
is CSRF-exempt. Only sandbox orders exist here."""

from __future__ import annotations

import json

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from guahao.payments.models import SandboxTrade
from guahao.payments.providers import sandbox

_OUTCOMES = {
    "paid": "支付成功，请返回挂号页面查看挂号结果。",
    "already_paid": "该订单已支付，无需重复支付。",
    "failed": "支付失败（模拟：银行卡被拒），订单仍未支付，可重新支付。",
    "closed": "订单已关闭，无法支付。请返回挂号页面重新发起支付。",
    "not_found": "订单不存在。",
    "bad_request": "请求有误：result 只能是 success 或 fail。",
}


@csrf_exempt
@require_http_methods(["GET", "POST"])
def sandbox_pay_page(request: HttpRequest, out_trade_no: str) -> HttpResponse:
    if "sandbox" not in settings.PAYMENT_PROVIDERS:  # guahao/urls.py mounts it only then, too
        raise Http404
    wants_json = request.content_type == "application/json" or "application/json" in request.headers.get(
        "Accept", ""
    )
    trade = sandbox.cashier_trade(out_trade_no)
    if trade is None:
        return _answer(request, wants_json, None, "not_found", status=404)
    if trade.state == SandboxTrade.State.CLOSED:
        return _answer(request, wants_json, trade, "closed", status=409)
    if request.method == "GET":
        outcome = "already_paid" if trade.state == SandboxTrade.State.SUCCESS else ""
        return _answer(request, wants_json, trade, outcome)

    result = _requested_result(request)
    if result not in {"success", "fail"}:
        return _answer(request, wants_json, trade, "bad_request", status=400)
    was_paid = trade.state == SandboxTrade.State.SUCCESS
    try:
        status = sandbox.pay(out_trade_no, succeed=result == "success")
    except sandbox.TradeClosed:
        return _answer(request, wants_json, trade, "closed", status=409)
    trade = sandbox.cashier_trade(out_trade_no)
    paid = status.state == SandboxTrade.State.SUCCESS
    outcome = "failed" if not paid else "already_paid" if was_paid else "paid"
    return _answer(request, wants_json, trade, outcome)


def _requested_result(request: HttpRequest) -> str | None:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            return None
        return data.get("result", "success") if isinstance(data, dict) else None
    return request.POST.get("result", "success")


def _answer(
    request: HttpRequest,
    wants_json: bool,
    trade: sandbox.CashierTrade | None,
    outcome: str,
    *,
    status: int = 200,
) -> HttpResponse:
    message = _OUTCOMES.get(outcome, "")
    if wants_json:
        if status >= 400:
            return JsonResponse(
                {"code": outcome, "message": message}, status=status, json_dumps_params={"ensure_ascii": False}
            )
        return JsonResponse(
            {
                "out_trade_no": trade.out_trade_no,
                "trade_state": trade.state,
                "amount_fen": trade.amount_fen,
                "message": message,
            },
            status=status,
            json_dumps_params={"ensure_ascii": False},
        )
    context = {
        "trade": trade,
        "amount_yuan": _yuan(trade.amount_fen) if trade else "",
        "outcome": outcome,
        "message": message,
        "payable": trade is not None and trade.state == SandboxTrade.State.NOTPAY,
        "success": outcome in {"paid", "already_paid"},
        "return_url": _return_url(request),
    }
    return render(request, "payments/sandbox_pay.html", context, status=status)


def _return_url(request: HttpRequest) -> str:
    """Where 返回商户 leads (a provider's H5 cashier takes a redirect URL too): a path on this site."""
    target = request.GET.get("return", "")
    if target.startswith("/") and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return ""


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"
