"""Channels for the worker's tests: one that appends each send to a file (shared by processes;
O_APPEND keeps lines whole), one that fails a given number of times first."""

from __future__ import annotations

import os

from guahao.notifications.channels.base import ChannelError, Outgoing


class FileChannel:
    """Records "<delivery id> <topic>" per send in $GUAHAO_TEST_CHANNEL_FILE."""

    name = "guahao.notifications.tests.recording.FileChannel"

    def wants(self, *, account_id: int, hospital_id: int | None, topic: str) -> bool:
        return True

    def send(self, message: Outgoing) -> str:
        line = f"{message.delivery_id} {message.topic} {os.getpid()}\n".encode()
        fd = os.open(os.environ["GUAHAO_TEST_CHANNEL_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return f"file-{message.delivery_id}"


class FlakyChannel:
    """Fails `failures` times per delivery (ChannelError), then takes it; `failures=None` always fails."""

    name = "guahao.notifications.tests.recording.FlakyChannel"
    failures: int | None = 3
    attempts: dict[int, int] = {}
    sent: list[Outgoing] = []

    def wants(self, *, account_id: int, hospital_id: int | None, topic: str) -> bool:
        return True

    def send(self, message: Outgoing) -> str:
        tries = FlakyChannel.attempts[message.delivery_id] = FlakyChannel.attempts.get(message.delivery_id, 0) + 1
        if FlakyChannel.failures is None or tries <= FlakyChannel.failures:
            raise ChannelError(f"模拟渠道第{tries}次失败")
        FlakyChannel.sent.append(message)
        return f"flaky-{message.delivery_id}"
