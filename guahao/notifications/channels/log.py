"""Development channel: messages go to the log (already masked by the sender)."""

from __future__ import annotations

import logging

log = logging.getLogger("guahao.messages")


class LogChannel:
    name = "log"

    def send(self, *, account_id: int, title: str, text: str) -> None:
        log.info("message", extra={"account_id": account_id, "title": title, "text": text})
