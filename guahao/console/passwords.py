"""Password rules for staff (等保三级): at least 8 characters mixing letters, digits and symbols."""

from __future__ import annotations

import string

from django.core.exceptions import ValidationError


class ComplexityValidator:
    """Letters, digits and symbols, each at least once."""

    def validate(self, password: str, user=None) -> None:
        missing = []
        if not any(c.isascii() and c.isalpha() for c in password):
            missing.append("字母")
        if not any(c.isdigit() for c in password):
            missing.append("数字")
        if not any(c in string.punctuation for c in password):
            missing.append("符号")
        if missing:
            raise ValidationError(f"密码须同时包含字母、数字和符号（缺少{'、'.join(missing)}）", code="password_too_simple")

    def get_help_text(self) -> str:
        return "密码须同时包含字母、数字和符号（如 !@#$%）。"
