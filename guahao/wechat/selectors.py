"""Reads of the 公众号 configuration and bindings."""

from __future__ import annotations

from dataclasses import dataclass

from guahao.wechat.models import OfficialAccount, WechatBinding, WechatTemplate


def enabled_official_account(hospital_id: int | None) -> OfficialAccount | None:
    if hospital_id is None:
        return None
    return OfficialAccount.objects.filter(hospital_id=hospital_id, enabled=True).first()


def official_account_by_app_id(app_id: str) -> OfficialAccount | None:
    return OfficialAccount.objects.filter(app_id=app_id, enabled=True).first()


def openid_of(*, app_id: str, account_id: int) -> str | None:
    return WechatBinding.objects.filter(app_id=app_id, account_id=account_id).values_list("openid", flat=True).first()


def account_id_for_openid(*, app_id: str, openid: str) -> int | None:
    """The active account bound to this openid, or None."""
    return (
        WechatBinding.objects.filter(app_id=app_id, openid=openid, account__is_active=True)
        .values_list("account_id", flat=True)
        .first()
    )


def is_bound(account_id: int) -> bool:
    """Whether the account is bound to any 公众号 (the console's account list)."""
    return WechatBinding.objects.filter(account_id=account_id).exists()


@dataclass(frozen=True)
class TemplateRoute:
    official_account: OfficialAccount
    template: WechatTemplate
    openid: str


def template_route(*, hospital_id: int | None, topic: str, account_id: int) -> TemplateRoute | None:
    """How a topic reaches this account as a 模板消息 at this hospital, or None when it does not
    (no enabled 公众号, no template for the topic, or the account is not bound)."""
    official = enabled_official_account(hospital_id)
    if official is None:
        return None
    template = WechatTemplate.objects.filter(official_account=official, topic=topic).first()
    if template is None or not template.template_id.strip():
        return None
    openid = openid_of(app_id=official.app_id, account_id=account_id)
    if not openid:
        return None
    return TemplateRoute(official_account=official, template=template, openid=openid)
