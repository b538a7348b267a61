"""What every patient page knows: 长辈版 on or off, the hospital, the signed-in account."""

from __future__ import annotations

from django.http import HttpRequest

from guahao.web.auth import signed_in_account

ELDER_COOKIE = "elder"


def web(request: HttpRequest) -> dict:
    path = request.path
    if path.startswith(("/api/", "/admin/")):
        return {}
    from guahao.web.hospital import current_hospital

    try:
        hospital = current_hospital(request)
    except Exception:  # noqa: BLE001 - no hospital configured yet: pages still render
        hospital = None
    return {
        "elder": request.COOKIES.get(ELDER_COOKIE) == "1",
        "hospital": hospital,
        "account": signed_in_account(request),
    }
