"""Password rules for staff (等保三级): at least 8 characters mixing letters, digits and symbols."""

from __future__ import annotations

import string

from django.core.exceptions import ValidationError


class ComplexityValidator:
    """At least `min_length` characters; letters, digits and symbols, each at least once."""

    def __init__(self, min_length: int = 8) -> None:
        self.min_length = min_length

    def validate(self, password: str, user=None) -> None:
        if len(password) < self.min_length:
            raise ValidationError(f"密码至少 {self.min_length} 个字符（现为 {len(password)} 个）", code="password_too_short")
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
        return f"密码至少 {self.min_length} 个字符，须同时包含字母、数字和符号（如 !@#$%）。"
