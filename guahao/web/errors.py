"""Errors on the patient pages: one page with the Chinese message, the hospital's customer-service
phone and a 刷新 action. Never a stack trace; /api/ keeps its JSON answers (guahao/api.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import PermissionDenied
from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from guahao.errors import GuahaoError, NotFound

log = logging.getLogger(__name__)

# Paths that answer in their own way (JSON, the admin's pages).
_NOT_WEB = ("/api/", "/admin/", "/captcha/", "/static/", "/healthz")


# Set on a request whose database query failed: its error page asks the database nothing more
# (each further try would wait for the connection pool's timeout again).
DATABASE_UNAVAILABLE = "guahao_database_unavailable"


def _service_phone(request: HttpRequest) -> str:
    from guahao.web.hospital import current_hospital

    if getattr(request, DATABASE_UNAVAILABLE, False):
        return ""

    try:
        return current_hospital(request).service_phone
    except Exception:  # noqa: BLE001 - an error page must render even when the database does not
        return ""


def error_page(request: HttpRequest, exc: GuahaoError, *, status: int | None = None) -> HttpResponse:
    context = {
        "message": exc.message,
        "code": exc.code,
        "service_phone": _service_phone(request),
        "retry_url": request.get_full_path() if request.method == "GET" else "",
    }
    response = TemplateResponse(request, "web/error.html", context, status=status or exc.status)
    response.render()
    if request.headers.get("HX-Request"):
        # Show the error page in place of the whole page, whatever the htmx target was.
        response["HX-Retarget"] = "body"
        response["HX-Reswap"] = "innerHTML"
    return response


class WebErrorMiddleware:
    """Turns exceptions raised by patient-page views into the error page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if request.path.startswith(_NOT_WEB):
            return None
        if isinstance(exception, GuahaoError):
            return error_page(request, exception)
        if isinstance(exception, Http404):
            return error_page(request, NotFound("页面不存在或已下线"), status=404)
        if isinstance(exception, PermissionDenied):
            return error_page(request, GuahaoError("无权访问此页面"), status=403)
        if isinstance(exception, OperationalError):
            # The database is restarting or refused us: nothing was written; a refresh will do.
            log.warning("database unavailable", extra={"path": request.path, "error": str(exception)[:200]})
            setattr(request, DATABASE_UNAVAILABLE, True)
            return error_page(request, GuahaoError("系统繁忙，请稍后重试", code="database_unavailable"), status=503)
        log.exception("web page failed", extra={"path": request.path})
        return error_page(
            request, GuahaoError("页面出错了，请刷新后重试；如仍有问题请联系医院客服", code="server_error"), status=500
        )
