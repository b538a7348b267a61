"""Writes to the in-app message list (消息): marking read. The fan-out creates the messages.

Both writes are compare-and-sets on the message rows themselves (account and read_at are columns
of the row): marking twice, or from two phones at once, sets read_at once and keeps the first time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from guahao import clock
from guahao.notifications import selectors
from guahao.notifications.models import InboxMessage

if TYPE_CHECKING:
    from guahao.patients.models import Account


def mark_read(*, account: Account, message_id: int) -> InboxMessage:
    """Mark one of the account's messages read (again is fine: the first read time stays).
    Another account's message is NotFound and stays untouched."""
    InboxMessage.objects.filter(id=message_id, account=account, read_at__isnull=True).update(read_at=clock.now())
    return selectors.get_message(account=account, message_id=message_id)


def mark_all_read(*, account: Account) -> int:
    """Mark every unread message of the account read; returns how many changed."""
    return InboxMessage.objects.filter(account=account, read_at__isnull=True).update(read_at=clock.now())
