"""Errors of our own: a stable machine code, a Chinese message for the patient, an HTTP status."""

from __future__ import annotations


class GuahaoError(Exception):
    status = 400
    code = "bad_request"
    message = "请求有误"

    def __init__(self, message: str | None = None, *, code: str | None = None, **detail: object):
        self.message = message or self.message
        self.code = code or self.code
        self.detail = detail
        super().__init__(self.message)


class InvalidInput(GuahaoError):
    status = 400
    code = "invalid_input"
    message = "输入有误"


class Unauthenticated(GuahaoError):
    status = 401
    code = "unauthenticated"
    message = "请先登录"


class Forbidden(GuahaoError):
    status = 403
    code = "forbidden"
    message = "无权进行此操作"


class NotFound(GuahaoError):
    status = 404
    code = "not_found"
    message = "记录不存在"


class Conflict(GuahaoError):
    status = 409
    code = "conflict"
    message = "当前状态不允许此操作"


class RateLimited(GuahaoError):
    status = 429
    code = "rate_limited"
    message = "操作过于频繁，请稍后再试"


class UpstreamUnavailable(GuahaoError):
    """The HIS or a payment provider did not answer. We never retry on the patient's behalf."""

    status = 503
    code = "upstream_unavailable"
    message = "医院系统暂时无法响应，请刷新后重试；如仍有问题请联系医院客服"
