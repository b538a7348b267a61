"""What every patient page knows: 长辈版 on or off, the hospital, the signed-in account."""

from __future__ import annotations

import functools

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from guahao.web.auth import signed_in_account

ELDER_COOKIE = "elder"


def web(request: HttpRequest) -> dict:
    path = request.path
    if path.startswith(("/api/", "/admin/")):
        return {}
    from guahao.web.errors import DATABASE_UNAVAILABLE
    from guahao.web.hospital import current_hospital

    if getattr(request, DATABASE_UNAVAILABLE, False):  # the error page of a database failure
        return {"elder": request.COOKIES.get(ELDER_COOKIE) == "1", "hospital": None, "account": None, "unread_messages": 0}
    try:
        hospital = current_hospital(request)
    except Exception:  # noqa: BLE001 - no hospital configured yet: pages still render
        hospital = None
    account = signed_in_account(request)
    return {
        "elder": request.COOKIES.get(ELDER_COOKIE) == "1",
        "hospital": hospital,
        "account": account,
        # The 消息 badge: counted only when a page shows it (htmx fragments do not).
        "unread_messages": SimpleLazyObject(functools.partial(_unread, account)),
    }


def _unread(account) -> int:
    if account is None:
        return 0
    from guahao.notifications.selectors import unread_count

    return unread_count(account)
