from __future__ import annotations

import pytest

from guahao.booking.tests.conftest import World, booker, ready_to_book, registered, world  # noqa: F401

__all__ = ["World", "ready_to_book", "registered"]


@pytest.fixture
def flaky(settings):
    """The outside channels are just the test's flaky one (fails 3 times per delivery by default)."""
    from guahao.notifications.channels import channel
    from guahao.notifications.tests.recording import FlakyChannel

    settings.MESSAGE_CHANNELS = [FlakyChannel.name]
    channel.cache_clear()
    FlakyChannel.failures, FlakyChannel.attempts, FlakyChannel.sent = 3, {}, []
    yield FlakyChannel
    channel.cache_clear()
