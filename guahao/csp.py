"""Content-Security-Policy on every response: the API's JSON, the admin, the patient pages and the
API docs page. Everything we serve loads only from this origin (Swagger UI comes from django-ninja's
static files, not a CDN) and runs no inline script, so the policy names nothing else. data: images
are the icons inside Swagger UI's and the admin's stylesheets."""

from __future__ import annotations

import functools
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from guahao.environment import DEVELOPMENT

# 确认并支付 posts to us and is redirected to the provider's cashier; browsers apply form-action to
# that redirect, so the cashiers' origins are named (and in development the sandbox gateway's).
PAYMENT_CASHIERS = ("https://wx.tenpay.com", "https://openapi.alipay.com")


@functools.cache
def policy(sandbox_url: str) -> str:
    origins = list(PAYMENT_CASHIERS)
    if sandbox_url:
        parts = urlsplit(sandbox_url)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return _POLICY.replace("form-action 'self'", "form-action 'self' " + " ".join(origins))


def current_policy() -> str:
    """The policy this deployment sends (production names no sandbox)."""
    return policy(settings.PAY_SANDBOX_URL if settings.ENV == DEVELOPMENT else "")


_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", current_policy())
        return response
