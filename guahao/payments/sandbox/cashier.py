"""The patient-facing pages: the providers' cashiers where the patient confirms or cancels a
payment, and their result pages. One look for both providers; no money ever moves.

WeChat's cashier is reached by the H5 pay link (/cashier/wechat/<out_trade_no>?prepay_id=…,
with WeChat's optional redirect_url) or, standing in for the WeChat client's JSAPI bridge, by
/cashier/wechat/jsapi with the signed getBrandWCPayRequest parameters. Alipay's is what gateway.do
shows for alipay.trade.wap.pay (alipay.py handles its buttons); both post back to their own path."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote

from guahao.payments.sandbox import wechat
from guahao.payments.sandbox.records import (
    CLOSED,
    NOTPAY,
    WECHAT,
    Trade,
    TradeClosed,
    TradeNotFound,
)
from guahao.payments.sandbox.wire import Reply, yuan

if TYPE_CHECKING:
    from guahao.payments.sandbox.ledger import SandboxGateway

_STYLE = """
body{margin:0;font-family:-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;background:#f2f2f2;color:#222}
main{max-width:420px;margin:0 auto;padding:24px 16px}
.brand{font-size:18px;font-weight:600;margin:0 0 4px}
.sandbox{color:#b26a00;font-size:13px;margin:0 0 20px}
.card{background:#fff;border-radius:8px;padding:20px}
.amount{font-size:34px;font-weight:600;text-align:center;margin:8px 0 16px}
dl{display:grid;grid-template-columns:auto 1fr;gap:8px 12px;margin:0;font-size:14px}
dt{color:#888}dd{margin:0;word-break:break-all}
form{margin-top:24px;display:grid;gap:12px}
button{font-size:17px;padding:12px;border-radius:6px;border:1px solid #ccc;background:#fff}
button.pay{border:0;color:#fff}
.wechat button.pay{background:#07c160}.alipay button.pay{background:#1677ff}
h1{font-size:22px;text-align:center}p.message{text-align:center;color:#555}
"""

BRANDS = {"wechat": "微信支付", "alipay": "支付宝"}


def page(title: str, inner: str, *, status: int = 200, theme: str = "") -> Reply:
    document = (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f'<body class="{theme}"><main>{inner}</main></body></html>'
    )
    headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
    return Reply(status, headers, document.encode("utf-8"))


def result(title: str, message: str = "", *, status: int = 200, theme: str = "") -> Reply:
    inner = f"<h1>{html.escape(title)}</h1>"
    if message:
        inner += f'<p class="message">{html.escape(message)}</p>'
    return page(title, inner, status=status, theme=theme)


def cashier_form(trade: Trade, action: str) -> Reply:
    """The confirmation page: what is paid, how much, and the two buttons."""
    brand = BRANDS[trade.provider]
    inner = (
        f'<p class="brand">{brand}</p><p class="sandbox">沙箱收银台：仅用于测试，不会真实扣款</p>'
        '<div class="card">'
        f'<p class="amount">¥{yuan(trade.amount_fen)}</p>'
        f"<dl><dt>商户</dt><dd>{html.escape(trade.description)}</dd>"
        f"<dt>金额</dt><dd>¥{yuan(trade.amount_fen)}</dd>"
        f"<dt>订单号</dt><dd>{html.escape(trade.out_trade_no)}</dd></dl>"
        f'<form method="post" action="{html.escape(action)}">'
        '<button class="pay" type="submit" name="action" value="pay">确认支付</button>'
        '<button type="submit" name="action" value="cancel">取消支付</button>'
        "</form></div>"
    )
    return page(f"{brand} - 确认支付", inner, theme=trade.provider)


def state_page(trade: Trade) -> Reply:
    """What the cashier shows for a trade that can no longer be paid."""
    if trade.state == CLOSED:
        return result("订单已关闭", "该订单已关闭，无法继续支付", theme=trade.provider)
    return result("支付成功", "该订单已支付", theme=trade.provider)


def alipay_cashier(trade: Trade) -> Reply:
    if trade.state != NOTPAY:
        return state_page(trade)
    return cashier_form(trade, "/cashier/alipay/" + quote(trade.out_trade_no, safe=""))


def alipay_error(sub_code: str, sub_msg: str) -> Reply:
    """Alipay's error page for a pay request it refuses (the browser sees it, not the merchant)."""
    message = f"错误代码：{sub_code}　错误原因：{sub_msg}"
    return result("支付请求有误", message, status=400, theme="alipay")


def safe_redirect(url: str) -> str:
    """Only http(s) targets: anything else (javascript:, data:) is dropped."""
    return url if url.startswith(("http://", "https://")) else ""


def see_other(url: str) -> Reply:
    return Reply(303, {"Location": url, "Content-Length": "0", "Cache-Control": "no-store"})


def form_action(headers: Mapping[str, str], body: bytes) -> str:
    if "x-www-form-urlencoded" not in headers.get("content-type", ""):
        return ""
    return dict(parse_qsl(body.decode("utf-8", "replace"))).get("action", "")


# --- WeChat ------------------------------------------------------------------------------------


def handle_wechat(
    gateway: SandboxGateway, method: str, target: str, headers: Mapping[str, str], body: bytes
) -> Reply:
    """/cashier/wechat/<out_trade_no>?prepay_id=… (H5) and /cashier/wechat/jsapi?… (JSAPI)."""
    path, _, raw_query = target.partition("?")
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    number = unquote(path.removeprefix("/cashier/wechat/"))
    if number == "jsapi":
        if not wechat.pay_sign_ok(gateway, query):
            return result(
                "支付验证失败",
                "支付参数签名校验失败，请返回商户重新发起支付",
                status=400,
                theme="wechat",
            )
        trade = gateway.trade_by_prepay(query["package"].removeprefix("prepay_id="))
    else:
        trade = gateway.trade(number)
        if trade is not None and trade.prepay_id != query.get("prepay_id"):
            trade = None
    if trade is None or trade.provider != WECHAT:
        return result("订单不存在", "未找到该支付订单", status=404, theme="wechat")
    redirect_url = safe_redirect(query.get("redirect_url", ""))
    if method == "GET":
        if trade.state != NOTPAY:
            return state_page(trade)
        return cashier_form(trade, target)
    if method != "POST":
        return result("请求方式不正确", status=405, theme="wechat")
    return act(gateway, trade, form_action(headers, body), redirect_url, redirect_url)


def act(
    gateway: SandboxGateway, trade: Trade, action: str, paid_to: str, cancelled_to: str
) -> Reply:
    """The patient pressed a button: pay or cancel, then go where the merchant asked."""
    theme = trade.provider
    if action not in ("pay", "cancel"):
        return result("请求无效", "请在收银台点击确认支付或取消支付", status=400, theme=theme)
    try:
        gateway.pay(trade.out_trade_no, succeed=action == "pay")
    except TradeClosed:
        return result("订单已关闭", "该订单已关闭，无法继续支付", status=409, theme=theme)
    except TradeNotFound:
        return result("订单不存在", "未找到该支付订单", status=404, theme=theme)
    if action == "pay":
        return (
            see_other(paid_to)
            if paid_to
            else result("支付成功", "您已完成支付，请返回商户查看", theme=theme)
        )
    return (
        see_other(cancelled_to)
        if cancelled_to
        else result("已取消支付", "您已取消本次支付", theme=theme)
    )
