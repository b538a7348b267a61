from __future__ import annotations

from django.db import models


class RateCounter(models.Model):
    """One fixed window of one rate limit for one subject, when no Redis is configured. `key`
    names the rule, the subject (a keyed hash, never the phone or IP itself) and the window."""

    key = models.CharField(max_length=120, unique=True)
    count = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = verbose_name_plural = "频率计数"

    def __str__(self) -> str:
        return self.key
