"""Console sessions (等保三级): they end after 15 idle minutes, checked on the server; a staff
member whose password is older than 90 days (or was set by someone else) changes it first."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from guahao import clock

SEEN_KEY = "console_seen_at"


class ConsoleSessionMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.idle = dt.timedelta(minutes=settings.CONSOLE_IDLE_MINUTES)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/admin/") and getattr(request, "user", None) and request.user.is_authenticated:
            response = self._check(request)
            if response is not None:
                return response
        return self.get_response(request)

    def _check(self, request: HttpRequest) -> HttpResponse | None:
        from guahao.console.services import password_expired

        now = clock.now()
        seen = request.session.get(SEEN_KEY)
        if seen is not None and now.timestamp() - seen > self.idle.total_seconds():
            request.console_idle_logout = True  # the logout signal audits it as such
            logout(request)
            messages.warning(request, f"闲置超过 {settings.CONSOLE_IDLE_MINUTES} 分钟，已自动退出，请重新登录")
            return HttpResponseRedirect(f"{reverse('admin:login')}?next={request.path}")
        request.session[SEEN_KEY] = now.timestamp()
        if request.user.is_staff and password_expired(request.user, now=now):
            allowed = {reverse("admin:password_change"), reverse("admin:password_change_done"),
                       reverse("admin:logout"), reverse("admin:login")}
            if request.path not in allowed and not request.path.startswith(settings.STATIC_URL):
                messages.warning(request, "密码已超过 90 天或为他人设置，请先修改密码")
                return HttpResponseRedirect(reverse("admin:password_change"))
        return None
