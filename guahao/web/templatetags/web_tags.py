from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def yuan(fen: int | None) -> str:
    """Integer fen as ¥12.50 (money is always fen in code)."""
    if fen is None:
        return ""
    return f"¥{fen // 100}.{fen % 100:02d}"
