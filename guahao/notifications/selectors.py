from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import Q

from guahao.errors import InvalidInput, NotFound
from guahao.notifications.models import InboxMessage, MessagingSettings

if TYPE_CHECKING:
    from guahao.patients.models import Account


# --- SMS ----------------------------------------------------------------------------------------


def sms_settings(hospital_id: int) -> MessagingSettings | None:
    return MessagingSettings.objects.filter(hospital_id=hospital_id).first()


def account_phone(account_id: int) -> str | None:
    """The account's phone in clear (decrypted), for the SMS channel only; None when it is gone."""
    from guahao.patients.models import Account

    return Account.objects.filter(id=account_id, is_active=True).values_list("phone", flat=True).first()


# --- the in-app list (消息) -----------------------------------------------------------------------

PAGE_SIZE = 20
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_CURSOR = re.compile(r"[0-9]{1,17}_[0-9]{1,18}")
MAX_PAGE_SIZE = 50


@dataclass(frozen=True)
class InboxPage:
    items: list[InboxMessage]
    next_cursor: str | None  # pass back as `cursor` for the next (older) page; None at the end


def unread_count(account: Account) -> int:
    return InboxMessage.objects.filter(account=account, read_at__isnull=True).count()


def inbox_page(*, account: Account, cursor: str = "", limit: int = PAGE_SIZE) -> InboxPage:
    """The account's messages, newest first, `limit` at a time. The cursor is the position of the
    last message shown (its time and id), so messages arriving meanwhile shift nothing."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    messages = InboxMessage.objects.filter(account=account).order_by("-created_at", "-id")
    if cursor:
        moment, last_id = _parse_cursor(cursor)
        messages = messages.filter(Q(created_at__lt=moment) | Q(created_at=moment, id__lt=last_id))
    items = list(messages[: limit + 1])
    more = len(items) > limit
    items = items[:limit]
    return InboxPage(items=items, next_cursor=_cursor_of(items[-1]) if more else None)


def get_message(*, account: Account, message_id: int) -> InboxMessage:
    """One of the account's own messages; another account's is as unknown as a missing one."""
    found = InboxMessage.objects.filter(id=message_id, account=account).first()
    if found is None:
        raise NotFound("消息不存在", code="message_not_found")
    return found


def _cursor_of(message: InboxMessage) -> str:
    micros = (message.created_at - _EPOCH) // dt.timedelta(microseconds=1)  # exact, unlike a float
    return f"{micros}_{message.id}"


def _parse_cursor(cursor: str) -> tuple[dt.datetime, int]:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidInput("翻页参数无效，请刷新列表", code="invalid_cursor")
    micros, _, last_id = cursor.partition("_")
    return _EPOCH + dt.timedelta(microseconds=int(micros)), int(last_id)
