"""Writes and outside calls of the 公众号: template messages and openid bindings."""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q

from guahao import clock
from guahao.wechat import tokens
from guahao.wechat.client import TOKEN_ERRORS, WechatApiError
from guahao.wechat.models import OfficialAccount, WechatBinding

log = logging.getLogger("guahao.wechat")

# Length limits of template values by field type (the part of the key before its number), as
# WeChat checks them since the 2023 template rules; a longer value is refused with 47003.
VALUE_LIMITS = {
    "thing": 20,
    "character_string": 32,
    "number": 32,
    "letter": 32,
    "symbol": 5,
    "amount": 32,
    "phrase": 5,
    "phone_number": 17,
    "car_number": 8,
    "const": 20,
    "name": 10,
    "time": 32,
    "date": 32,
}
OTHER_LIMIT = 200  # keys of older templates (first, keyword1, remark)
_FIELD_TYPE = re.compile(r"^([a-z_]+?)\d*$")
_PLACEHOLDER = re.compile(r"\{([^{}]{1,10})\}")
# Placeholders a template field may use beyond the message variables.
EXTRA_PLACEHOLDERS = {"标题": "消息标题", "内容": "消息全文"}


def field_limit(key: str) -> int:
    found = _FIELD_TYPE.match(key)
    return VALUE_LIMITS.get(found.group(1), OTHER_LIMIT) if found else OTHER_LIMIT


def fit(key: str, value: str) -> str:
    """The value cut to its field's limit; 事物 (thing) text ends with … when cut."""
    limit = field_limit(key)
    value = " ".join(value.split())
    if len(value) <= limit:
        return value
    if key.startswith(("thing", "const")) or limit == OTHER_LIMIT:
        return value[: limit - 1] + "…"
    return value[:limit]


def template_data(mapping: Mapping[str, str], variables: Mapping[str, str]) -> dict[str, str]:
    """Each template field's text with its placeholders filled (an unknown one becomes empty),
    cut to the field's limit."""
    filled = {}
    for key, pattern in mapping.items():
        text = _PLACEHOLDER.sub(lambda m: str(variables.get(m.group(1), "") or ""), str(pattern))
        filled[key] = fit(key, text)
    return filled


def template_body(*, openid: str, template_id: str, url: str, data: Mapping[str, str], client_msg_id: str) -> dict[str, Any]:
    """The JSON of POST /cgi-bin/message/template/send."""
    body: dict[str, Any] = {"touser": openid, "template_id": template_id}
    if url:  # optional: without it the message opens nothing when tapped
        body["url"] = url
    body["data"] = {key: {"value": value} for key, value in data.items()}
    body["client_msg_id"] = client_msg_id  # WeChat sends one message per openid and id
    return body


def send_template(*, official: OfficialAccount, body: dict[str, Any]) -> str:
    """Send one template message; returns WeChat's msgid. When WeChat says the access_token is
    invalid or expired, the token is refreshed (once, for all processes) and the message sent once
    more. Raises WechatApiError or WechatUnavailable otherwise."""
    client = tokens.client_for(official)
    token = tokens.access_token(official)
    try:
        return client.send_template(access_token=token.value, body=body)
    except WechatApiError as exc:
        if exc.errcode not in TOKEN_ERRORS:
            raise
        log.info("access_token refused, refreshing", extra={"app_id": official.app_id, "errcode": exc.errcode})
    token = tokens.access_token(official, stale_version=token.version)
    return client.send_template(access_token=token.value, body=body)


class BindOutcome(enum.Enum):
    BOUND = "bound"
    ALREADY = "already"  # this account already has this openid
    OPENID_TAKEN = "openid_taken"  # the openid belongs to another account: left as it is
    ACCOUNT_HAS_OTHER = "account_has_other"  # the account has another openid under this AppID


def bind_openid(*, account_id: int, app_id: str, openid: str) -> BindOutcome:
    """Bind the openid to the account, once. A binding is never moved: an openid bound to another
    account stays with it, and an account keeps its first openid (staff remove a binding in the
    console when a patient changes WeChat accounts)."""
    existing = list(WechatBinding.objects.filter(Q(openid=openid) | Q(account_id=account_id), app_id=app_id))
    if not existing:
        try:
            with transaction.atomic():
                WechatBinding.objects.create(app_id=app_id, openid=openid, account_id=account_id, bound_at=clock.now())
        except IntegrityError:  # a simultaneous sign-in bound one of them first
            existing = list(WechatBinding.objects.filter(Q(openid=openid) | Q(account_id=account_id), app_id=app_id))
        else:
            log.info("wechat openid bound", extra={"account_id": account_id, "app_id": app_id})
            return BindOutcome.BOUND
    for binding in existing:
        if binding.openid == openid and binding.account_id == account_id:
            return BindOutcome.ALREADY
    outcome = (
        BindOutcome.OPENID_TAKEN if any(b.openid == openid for b in existing) else BindOutcome.ACCOUNT_HAS_OTHER
    )
    log.warning("wechat openid not bound", extra={"account_id": account_id, "app_id": app_id, "reason": outcome.value})
    return outcome


def unbind(*, account_id: int, app_id: str) -> int:
    with transaction.atomic():
        deleted, _ = WechatBinding.objects.filter(app_id=app_id, account_id=account_id).delete()
    return deleted
