"""An SMS gateway reached over HTTP: POST {"phone", "text"} as signed JSON (guahao.signed_post) to
GUAHAO_SMS_URL with GUAHAO_SMS_SECRET. Any 2xx answer means the gateway took the message."""

from __future__ import annotations

import logging

from django.conf import settings

from guahao.patients.sms.base import SmsNotSent
from guahao.pii import mask_phone
from guahao.signed_post import Unreachable, post_json

log = logging.getLogger("guahao.sms")

TEXT = "您的登录验证码为 {code}，请勿告诉他人。如非本人操作，请忽略本短信。"


class HttpSmsSender:
    def send_code(self, phone: str, code: str) -> None:
        masked = mask_phone(phone)
        try:
            answer = post_json(
                settings.SMS_URL,
                {"phone": phone, "text": TEXT.format(code=code)},
                secret=settings.SMS_SECRET,
                timeout=settings.SMS_TIMEOUT,
            )
        except Unreachable as exc:
            log.warning("sms gateway did not answer", extra={"phone": masked, "error": str(exc)[:200]})
            raise SmsNotSent("sms gateway did not answer") from exc
        if not answer.ok:
            log.warning("sms gateway refused", extra={"phone": masked, "status": answer.status})
            raise SmsNotSent(f"sms gateway answered {answer.status}")
        log.info("sms code sent", extra={"phone": masked})
