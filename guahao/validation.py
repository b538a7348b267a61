"""Turn pydantic's validation errors into one Chinese sentence that names the fields."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_TYPES = {
    "missing": "必填",
    "string_type": "应为文字",
    "int_type": "应为整数",
    "int_parsing": "应为整数",
    "bool_type": "应为是/否",
    "bool_parsing": "应为是/否",
    "string_too_short": "太短",
    "string_too_long": "太长",
    "string_pattern_mismatch": "格式不正确",
    "enum": "不是允许的取值",
    "literal_error": "不是允许的取值",
    "greater_than_equal": "太小",
    "less_than_equal": "太大",
    "greater_than": "太小",
    "less_than": "太大",
    "datetime_parsing": "应为时间（ISO 8601）",
    "datetime_from_date_parsing": "应为时间（ISO 8601）",
    "date_parsing": "应为日期（YYYY-MM-DD）",
    "date_from_datetime_parsing": "应为日期（YYYY-MM-DD）",
    "model_attributes_type": "格式不正确",
    "dict_type": "应为 JSON 对象",
    "json_invalid": "不是合法的 JSON",
    "value_error": "格式不正确",
}


def describe_validation_errors(errors: Iterable[dict[str, Any]]) -> tuple[str, dict[str, str]]:
    fields: dict[str, str] = {}
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "payload")]
        name = ".".join(loc) or "请求体"
        ctx = err.get("ctx") or {}
        reason = ctx.get("reason") if isinstance(ctx.get("reason"), str) else None
        fields.setdefault(name, reason or _TYPES.get(err.get("type", ""), "格式不正确"))
    message = "；".join(f"{k}：{v}" for k, v in fields.items())
    return f"请求参数有误（{message}）", fields
