"""The REST API at /api/v1: one NinjaAPI, one router per area, one error shape for all of them."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DataError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.renderers import JSONRenderer

from guahao.environment import DEVELOPMENT
from guahao.errors import GuahaoError
from guahao.validation import describe_validation_errors

log = logging.getLogger("guahao.api")

class ChineseJSONRenderer(JSONRenderer):
    """UTF-8 JSON: Chinese text stays readable on the wire and in logs."""

    json_dumps_params = {"ensure_ascii": False}


_DESCRIPTION = "医院线上预约挂号服务接口。错误统一为 {code, message}，message 为中文。"
_DEVELOPMENT_NOTE = (
    "**开发模式**（GUAHAO_ENV=development）：允许沙箱支付、日志短信通道和自动生成的密钥，"
    "切勿用于真实患者。/ Development mode: never use with real patients.\n\n"
)
_development = settings.ENV == DEVELOPMENT

# The one error shape of every operation (see the handlers below), in the published schema: any
# operation may answer 4xx (bad input, sign-in, not found, state, limits) or 503 (database or an
# outside system briefly unavailable) with it.
_ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "稳定的错误代码，如 validation_error、slot_taken"},
        "message": {"type": "string", "description": "给用户看的中文说明"},
        "fields": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "参数有误时：各字段应满足的条件",
        },
    },
}
_ERROR_RESPONSES: dict[str | int, str] = {
    "4XX": "请求有误（错误代码与中文说明）",
    503: "系统或医院系统暂时无法响应，请稍后重试",
}


class GuahaoAPI(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix: str | None = None, path_params: dict | None = None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for operations in schema["paths"].values():
            for operation in operations.values():
                for status, description in _ERROR_RESPONSES.items():
                    operation["responses"].setdefault(status, {"description": description, "content": error})
        return schema


api = GuahaoAPI(
    renderer=ChineseJSONRenderer(),
    title="guahao 挂号 API" + ("（开发模式）" if _development else ""),
    version="1",
    description=(_DEVELOPMENT_NOTE if _development else "") + _DESCRIPTION,
    urls_namespace="api-v1",
)


def _error(request: HttpRequest, status: int, code: str, message: str, **extra: object) -> HttpResponse:
    return api.create_response(request, {"code": code, "message": message, **extra}, status=status)


@api.exception_handler(GuahaoError)
def on_guahao_error(request: HttpRequest, exc: GuahaoError) -> HttpResponse:
    response = _error(request, exc.status, exc.code, exc.message, **exc.detail)
    if exc.status == 429 and exc.detail.get("retry_after"):
        response["Retry-After"] = str(exc.detail["retry_after"])
    return response


@api.exception_handler(NinjaValidationError)
def on_validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    message, fields = describe_validation_errors(exc.errors)
    return _error(request, 422, "validation_error", message, fields=fields)


@api.exception_handler(AuthenticationError)
def on_auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error(request, 401, "unauthenticated", "请先登录（登录已失效时请重新获取验证码）")


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, "not_found", "记录不存在")


@api.exception_handler(DataError)
@api.exception_handler(OverflowError)
def on_out_of_range(request: HttpRequest, exc: Exception) -> HttpResponse:
    # An id or number beyond what the database column holds (PostgreSQL raises DataError, SQLite's
    # driver OverflowError): bad input, not a server fault.
    log.warning("value out of range", extra={"path": request.path, "error": type(exc).__name__})
    return _error(request, 400, "out_of_range", "参数超出允许范围")


@api.exception_handler(OperationalError)
def on_database_unavailable(request: HttpRequest, exc: OperationalError) -> HttpResponse:
    # The database refused or dropped us (restart, lock timeout, a deadlock that outlived its
    # retries): nothing was written, and the patient may simply try again.
    log.warning("database unavailable", extra={"path": request.path, "error": str(exc)[:200]})
    return _error(request, 503, "database_unavailable", "系统繁忙，请稍后重试")


@api.exception_handler(RequestDataTooBig)
def on_body_too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    # Django raises this when the body is first read; left alone it would be an HTML 400.
    log.warning("request body too large", extra={"path": request.path, "content_length": request.META.get("CONTENT_LENGTH")})
    return _error(request, 413, "payload_too_large", "请求内容过大")


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    messages = {400: "请求格式有误", 405: "不支持此请求方法", 413: "请求内容过大"}
    return _error(request, exc.status_code, "http_error", messages.get(exc.status_code, "请求有误"))


@csrf_exempt  # a POST to a wrong path gets the JSON 404, not the CSRF page
def unknown_api_path(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
    """Any path under /api/ that no endpoint serves (/api/v1/nope, /api/v2/…): the API's JSON
    error, not Django's HTML page. Mounted in guahao/urls.py after the API."""
    return _error(request, 404, "not_found", "接口不存在")


class JsonMethodNotAllowedMiddleware:
    """django-ninja answers a method that a path does not serve with an English text 405; under
    /api/ it becomes the API's JSON error, with the Allow header kept."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code == 405
            and request.path.startswith("/api/")
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            allowed = response.get("Allow")
            response = _error(request, 405, "method_not_allowed", "不支持此请求方法")
            if allowed:
                response["Allow"] = allowed
        return response


def _mount() -> None:
    from guahao.booking.api import router as booking
    from guahao.catalog.api import router as catalog
    from guahao.his.api import router as his
    from guahao.notifications.api import router as messages
    from guahao.patients.api import auth_router
    from guahao.patients.api import router as patients
    from guahao.payments.api import router as payments
    from guahao.scheduling.api import router as scheduling

    api.add_router("/auth", auth_router)
    api.add_router("/", catalog)
    api.add_router("/", scheduling)
    api.add_router("/patients", patients)
    api.add_router("/", booking)
    api.add_router("/payments", payments)
    api.add_router("/", his)
    api.add_router("/", messages)


_mount()
