"""What guahao keeps of its exchanges with a hospital's HIS: where the schedule sync stopped (the
HIS's cursor) and the nonces of the HIS's signed callbacks. Imported by guahao/his/models.py."""

from __future__ import annotations

from django.db import models


class HisSyncState(models.Model):
    """One row per hospital whose schedule has been synced from its HIS."""

    hospital = models.OneToOneField(
        "catalog.Hospital", on_delete=models.CASCADE, related_name="his_sync", verbose_name="医院"
    )
    cursor = models.CharField("同步游标", max_length=200, blank=True, help_text="医院系统上次返回的游标，下次从此处继续")
    synced_at = models.DateTimeField("上次同步时间", null=True, blank=True)
    last_report = models.JSONField("上次同步结果", default=dict, blank=True)

    class Meta:
        app_label = "his"
        verbose_name = verbose_name_plural = "排班同步状态"

    def __str__(self) -> str:
        return f"{self.hospital} 排班同步"


class HisCallbackNonce(models.Model):
    """Nonces of accepted HIS callbacks, kept while their timestamp could still pass the ±5 minute
    check, so a captured callback cannot be played back."""

    hospital = models.ForeignKey("catalog.Hospital", on_delete=models.CASCADE, related_name="+")
    nonce = models.CharField(max_length=64)
    seen_at = models.DateTimeField(db_index=True)

    class Meta:
        app_label = "his"
        constraints = [models.UniqueConstraint(fields=["hospital", "nonce"], name="his_callback_nonce_once")]

    def __str__(self) -> str:
        return self.nonce
