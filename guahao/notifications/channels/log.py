"""Development channel: messages go to the log (already masked by the sender)."""

from __future__ import annotations

import logging

from guahao.notifications.channels.base import Outgoing

log = logging.getLogger("guahao.messages")


class LogChannel:
    name = "log"

    def wants(self, *, account_id: int, hospital_id: int | None, topic: str) -> bool:
        return True

    def send(self, message: Outgoing) -> str:
        log.info(
            "message",
            extra={"account_id": message.account_id, "topic": message.topic, "title": message.title, "text": message.text},
        )
        return f"log-{message.delivery_id}"
