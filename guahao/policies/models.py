from __future__ import annotations

from django.db import models


class Restriction(models.Model):
    """A booking ban on a real person (by ID blind index, so it follows them across accounts)."""

    hospital = models.ForeignKey("catalog.Hospital", on_delete=models.CASCADE, related_name="restrictions")
    patient_index = models.CharField(max_length=64, db_index=True)
    reason = models.CharField("原因", max_length=100)
    until = models.DateField("限制至（含）")
    created_at = models.DateTimeField()
    lifted_at = models.DateTimeField("解除时间", null=True, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "预约限制"

    def __str__(self) -> str:
        return f"{self.reason}（至 {self.until}）"
