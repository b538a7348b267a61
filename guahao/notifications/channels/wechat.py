"""公众号 template messages (模板消息): a message goes to WeChat when the hospital turned 公众号 on in
消息设置, its official account is enabled, the topic has a WeChat template (console: 公众号模板消息)
and the patient's account is bound to an openid (网页授权 sign-in, guahao/wechat).

How WeChat's answers map onto the port:
- access_token invalid or expired (40001, 42001, 40014): refreshed once for all processes and the
  message sent again (guahao.wechat.services.send_template); failing again → ChannelError;
- the user unfollowed (43004), refused messages (43101) or an invalid openid (40003) →
  ChannelRefused;
- API limit (45009), system busy (-1), a timeout or a 5xx → ChannelError (the worker retries);
- a wrong AppID, secret or template (40013, 40125, 40037, 47003 …) → ChannelError with an ERROR log
  line "wechat configuration problem": staff fix it in the console and the retries deliver.
"""

from __future__ import annotations

import logging

from django.conf import settings

from guahao.notifications.channels.base import ChannelError, ChannelRefused, Outgoing
from guahao.notifications.models import InboxMessage, MessagingSettings

log = logging.getLogger("guahao.messages.wechat")


def _wechat_on(hospital_id: int | None) -> bool:
    return hospital_id is not None and MessagingSettings.objects.filter(hospital_id=hospital_id, wechat_enabled=True).exists()


def link_of(message: Outgoing) -> str:
    """Where tapping the message leads: the in-app message's link on this deployment, if any."""
    from guahao.notifications.models import Delivery

    event_id = Delivery.objects.filter(id=message.delivery_id).values_list("event_id", flat=True).first()
    link = (
        InboxMessage.objects.filter(event_id=event_id, account_id=message.account_id).values_list("link", flat=True).first()
        if event_id
        else ""
    ) or ""
    if link.startswith("/"):
        return settings.PUBLIC_URL + link
    return link if link.startswith("https://") or link.startswith("http://") else ""


class WechatTemplateChannel:
    name = "wechat"

    def wants(self, *, account_id: int, hospital_id: int | None, topic: str) -> bool:
        from guahao.wechat.selectors import template_route

        return _wechat_on(hospital_id) and template_route(hospital_id=hospital_id, topic=topic, account_id=account_id) is not None

    def send(self, message: Outgoing) -> str:
        from guahao.wechat import services
        from guahao.wechat.client import (
            CONFIGURATION_ERRORS,
            RECIPIENT_ERRORS,
            WechatApiError,
            WechatUnavailable,
        )
        from guahao.wechat.selectors import template_route

        route = template_route(hospital_id=message.hospital_id, topic=message.topic, account_id=message.account_id)
        if route is None or not _wechat_on(message.hospital_id):
            # Turned off, the template removed or the account unbound since the event.
            raise ChannelRefused("公众号消息未开启、未配置模板或账号未绑定微信")
        variables = {**message.params, "标题": message.title, "内容": message.text}
        body = services.template_body(
            openid=route.openid,
            template_id=route.template.template_id,
            url=link_of(message),
            data=services.template_data(route.template.data or {}, variables),
            client_msg_id=f"guahao-{message.delivery_id}",
        )
        context = {"delivery_id": message.delivery_id, "topic": message.topic, "app_id": route.official_account.app_id}
        try:
            msgid = services.send_template(official=route.official_account, body=body)
        except WechatUnavailable as exc:
            log.warning("wechat did not answer", extra={**context, "error": str(exc)})
            raise ChannelError(f"微信无应答：{exc}") from exc
        except WechatApiError as exc:
            reason = f"微信错误 {exc.errcode}：{exc.errmsg}"[:200]
            if exc.errcode in RECIPIENT_ERRORS:
                log.info("wechat refused the recipient", extra={**context, "errcode": exc.errcode})
                raise ChannelRefused(reason) from exc
            if exc.errcode in CONFIGURATION_ERRORS:
                log.error("wechat configuration problem: fix the AppID, secret or template", extra={**context, "errcode": exc.errcode, "errmsg": exc.errmsg[:120]})
            else:
                log.warning("wechat asked to retry later", extra={**context, "errcode": exc.errcode})
            raise ChannelError(reason) from exc
        log.info("wechat template message sent", extra={**context, "msgid": msgid})
        return msgid
