"""Turn pydantic's validation errors into one Chinese sentence that names each field and what it
must be: its limit (`days：最多 14 天`, `name：最多 64 个字`) or its allowed values
(`relation：应为 本人、配偶、子女、父母、其他`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import Any

from django.db import models

_TYPES = {
    "missing": "必填",
    "string_type": "应为文字",
    "int_type": "应为整数",
    "int_parsing": "应为整数",
    "int_from_float": "应为整数",
    "float_type": "应为数字",
    "float_parsing": "应为数字",
    "decimal_parsing": "应为数字",
    "bool_type": "应为 true 或 false",
    "bool_parsing": "应为 true 或 false",
    "list_type": "应为列表",
    "string_pattern_mismatch": "格式不正确",
    "datetime_type": "应为时间（ISO 8601，如 2025-03-01T08:00:00+08:00）",
    "datetime_parsing": "应为时间（ISO 8601，如 2025-03-01T08:00:00+08:00）",
    "datetime_from_date_parsing": "应为时间（ISO 8601，如 2025-03-01T08:00:00+08:00）",
    "date_type": "应为日期（YYYY-MM-DD）",
    "date_parsing": "应为日期（YYYY-MM-DD）",
    "date_from_datetime_parsing": "应为日期（YYYY-MM-DD）",
    "model_attributes_type": "应为 JSON 对象",
    "model_type": "应为 JSON 对象",
    "dict_type": "应为 JSON 对象",
    "json_invalid": "不是合法的 JSON",
    "json_type": "不是合法的 JSON",
    "extra_forbidden": "不是可接受的字段",
    "value_error": "格式不正确",
}

# The unit of a number field, by its name, so a limit reads as the patient thinks of it.
_UNITS = {"days": " 天", "limit": " 条"}

_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")


def _number(value: object) -> str:
    # 10.0 → 10: limits are whole numbers in this API.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@cache
def _choices_by_values() -> dict[frozenset[str], tuple[tuple[str, str], ...]]:
    """Every Django choices enum loaded, by its set of values: a pydantic enum error names the
    values, this gives their labels in the enum's own order."""
    found: dict[frozenset[str], tuple[tuple[str, str], ...]] = {}
    todo = list(models.Choices.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        choices = tuple((str(value), str(label)) for value, label in getattr(cls, "choices", ()))
        if choices:
            found.setdefault(frozenset(v for v, _ in choices), choices)
    return found


def _allowed(expected: str) -> str:
    """`'self', 'spouse' or 'child'` → 本人、配偶、子女 (labels of the enum with exactly these
    values), else the values themselves."""
    values = [v.replace("\\'", "'") for v in _QUOTED.findall(expected)] or [expected]
    choices = _choices_by_values().get(frozenset(values))
    if choices is not None:
        return "、".join(label for _, label in choices)
    return "、".join(values)


def _describe(err: dict[str, Any], field: str) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    unit = _UNITS.get(field.rsplit(".", 1)[-1], "")
    if isinstance(ctx.get("reason"), str):
        return ctx["reason"]
    if kind in ("enum", "literal_error") and "expected" in ctx:
        return f"应为 {_allowed(str(ctx['expected']))}"
    if kind == "less_than_equal":
        return f"最多 {_number(ctx.get('le'))}{unit}"
    if kind == "greater_than_equal":
        return f"最少 {_number(ctx.get('ge'))}{unit}"
    if kind == "less_than":
        return f"应小于 {_number(ctx.get('lt'))}{unit}"
    if kind == "greater_than":
        return f"应大于 {_number(ctx.get('gt'))}{unit}"
    if kind == "string_too_long":
        return f"最多 {ctx.get('max_length')} 个字"
    if kind == "string_too_short":
        return "不能为空" if ctx.get("min_length") == 1 else f"至少 {ctx.get('min_length')} 个字"
    if kind == "too_long":
        return f"最多 {ctx.get('max_length')} 项"
    if kind == "too_short":
        return f"至少 {ctx.get('min_length')} 项"
    if kind == "value_error" and isinstance(ctx.get("error"), ValueError):
        text = str(ctx["error"])
        if re.search(r"[\u4e00-\u9fff]", text):  # our own validators speak Chinese
            return text
    return _TYPES.get(kind, "格式不正确")


def describe_validation_errors(errors: Iterable[dict[str, Any]]) -> tuple[str, dict[str, str]]:
    """(message, {field: what it must be}); the message lists every field: 请求参数有误（days：最多 14 天）."""
    fields: dict[str, str] = {}
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "payload")]
        name = ".".join(loc) or "请求体"
        fields.setdefault(name, _describe(err, name))
    message = "；".join(f"{k}：{v}" for k, v in fields.items())
    return f"请求参数有误（{message}）", fields
