"""SMS (Aliyun 短信服务): a message goes by SMS when the hospital turned SMS on in 消息设置, gave the
topic an approved template code, and the deployment has SMS credentials.

How the provider's answers map onto the port (guahao.notifications.sms.aliyun.outcome_of):
- no answer, a 5xx, throttling, isv.BUSINESS_LIMIT_CONTROL → ChannelError (the worker retries);
- an invalid number (isv.MOBILE_NUMBER_ILLEGAL) or a variable the provider will never take →
  ChannelRefused (never deliverable);
- wrong keys, signature, sign name or template (SignatureDoesNotMatch, InvalidAccessKeyId.NotFound,
  isv.SMS_TEMPLATE_ILLEGAL, isv.SMS_SIGNATURE_ILLEGAL, isv.TEMPLATE_MISSING_PARAMETERS …) →
  ChannelError with an ERROR log line "sms configuration problem": staff fix it in the console or
  the environment, and the retries (or a retry of the parked delivery) then deliver the message
  instead of losing it to a typo. Settings are read again at every send for that reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings

from guahao.notifications import selectors
from guahao.notifications.channels.base import ChannelError, ChannelRefused, Outgoing
from guahao.notifications.sms import aliyun
from guahao.notifications.sms.aliyun import Outcome
from guahao.notifications.sms.variables import template_param
from guahao.pii import mask_phone

log = logging.getLogger("guahao.messages.sms")


@dataclass(frozen=True)
class SmsRoute:
    sign_name: str
    template_code: str


def route(*, hospital_id: int | None, topic: str) -> SmsRoute | None:
    """The sign name and template code a topic goes out with at this hospital, or None when it
    sends no SMS."""
    if hospital_id is None or not aliyun.configured():
        return None
    found = selectors.sms_settings(hospital_id)
    if found is None or not found.sms_enabled:
        return None
    code = str((found.sms_templates or {}).get(topic, "")).strip()
    sign_name = found.sms_sign_name.strip() or settings.SMS_SIGN_NAME
    if not code or not sign_name:
        return None
    return SmsRoute(sign_name=sign_name, template_code=code)


class SmsChannel:
    name = "sms"

    def wants(self, *, account_id: int, hospital_id: int | None, topic: str) -> bool:
        return route(hospital_id=hospital_id, topic=topic) is not None

    def send(self, message: Outgoing) -> str:
        chosen = route(hospital_id=message.hospital_id, topic=message.topic)
        if chosen is None:  # SMS turned off, or the topic's template removed, since the event
            raise ChannelRefused("短信未开启或该消息类型未配置短信模板")
        phone = selectors.account_phone(message.account_id)
        if not phone:
            raise ChannelRefused("账号没有手机号")
        context = {"delivery_id": message.delivery_id, "topic": message.topic, "phone": mask_phone(phone), "template": chosen.template_code}
        try:
            answer = aliyun.AliyunSmsClient.from_settings().send_sms(
                phone=phone,
                sign_name=chosen.sign_name,
                template_code=chosen.template_code,
                template_param=template_param(message.params),
                out_id=f"guahao-{message.delivery_id}",
            )
        except aliyun.SmsUnavailable as exc:
            log.warning("sms provider did not answer", extra={**context, "error": str(exc)})
            raise ChannelError(f"短信服务无应答：{exc}") from exc
        reason = answer.summary
        if answer.outcome is Outcome.SENT:
            log.info("sms sent", extra={**context, "biz_id": answer.biz_id})
            return answer.biz_id
        if answer.outcome is Outcome.UNDELIVERABLE:
            log.warning("sms refused for good", extra={**context, "code": answer.code})
            raise ChannelRefused(reason)
        if answer.outcome is Outcome.CONFIGURATION:
            log.error("sms configuration problem: fix the keys, sign name or template code", extra={**context, "answer": reason})
            raise ChannelError(f"短信配置有误（{reason}）")
        log.warning("sms provider asked to retry later", extra={**context, "code": answer.code})
        raise ChannelError(reason)
