"""Sign-in codes through Aliyun 短信服务 (GUAHAO_SMS_CHANNEL=aliyun): SendSms with the platform's
sign name (GUAHAO_SMS_SIGN_NAME) and the code template (GUAHAO_SMS_CODE_TEMPLATE, whose one
variable is ${code}). The client and its signature: guahao.notifications.sms.aliyun."""

from __future__ import annotations

import logging

from django.conf import settings

from guahao.notifications.sms.aliyun import AliyunSmsClient, Outcome, SmsUnavailable
from guahao.patients.sms.base import SmsNotSent
from guahao.pii import mask_phone

log = logging.getLogger("guahao.sms")


class AliyunSmsSender:
    def send_code(self, phone: str, code: str) -> None:
        masked = mask_phone(phone)
        try:
            answer = AliyunSmsClient.from_settings().send_sms(
                phone=phone,
                sign_name=settings.SMS_SIGN_NAME,
                template_code=settings.SMS_CODE_TEMPLATE,
                template_param={"code": code},
            )
        except SmsUnavailable as exc:
            log.warning("sms provider did not answer", extra={"phone": masked, "error": str(exc)})
            raise SmsNotSent("sms provider did not answer") from exc
        if answer.outcome is Outcome.SENT:
            log.info("sms code sent", extra={"phone": masked, "biz_id": answer.biz_id})
            return
        if answer.outcome is Outcome.CONFIGURATION:
            log.error("sms configuration problem: check GUAHAO_SMS_* settings", extra={"phone": masked, "answer": answer.summary})
        else:
            log.warning("sms provider refused the code", extra={"phone": masked, "answer": answer.summary})
        raise SmsNotSent(answer.summary)
