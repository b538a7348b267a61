"""Browsing and search per address (`browse_ip`): a level no person reaches, so a scraper or a bot
polling schedules before a release is slowed without anyone else noticing."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from guahao.errors import RateLimited
from guahao.limits import services as limits
from guahao.limits.clientip import client_ip

# Patient-facing reads; the API's own docs and schema are not browsing.
_PREFIXES = ("/api/v1/",)
_EXEMPT = ("/api/v1/docs", "/api/v1/openapi.json")


class BrowseLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            request.method in {"GET", "HEAD"}
            and request.path.startswith(_PREFIXES)
            and not request.path.startswith(_EXEMPT)
        ):
            try:
                limits.hit("browse_ip", client_ip(request))
            except RateLimited as exc:
                body = {"code": exc.code, "message": exc.message, **exc.detail}
                response = HttpResponse(
                    json.dumps(body, ensure_ascii=False),
                    status=429,
                    content_type="application/json; charset=utf-8",
                )
                response["Retry-After"] = str(exc.detail["retry_after"])
                return response
        return self.get_response(request)
