"""Development channel: the code goes to the log (logger "guahao.sms") instead of a phone.

The code is logged so a developer can sign in; the phone is masked like everywhere else.
"""

from __future__ import annotations

import logging

from guahao.pii import mask_phone

log = logging.getLogger("guahao.sms")


class LogSmsSender:
    def send_code(self, phone: str, code: str) -> None:
        masked = mask_phone(phone)
        log.info("sms code %s sent to %s", code, masked, extra={"phone": masked, "sms_code": code})
