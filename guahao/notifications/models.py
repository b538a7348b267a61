from __future__ import annotations

from django.db import models


class OutboxEvent(models.Model):
    """Written in the same transaction as the state change it reports; drained by `guahao worker`."""

    topic = models.CharField(max_length=60)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    available_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # Who holds the claim: only that claim may complete or fail the event.
    claim_token = models.CharField(max_length=32, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "事件"
        indexes = [models.Index(fields=["processed_at", "available_at"])]

    def __str__(self) -> str:
        return f"{self.topic} #{self.id}"


class Lease(models.Model):
    """Who runs the scheduled sweeps. A worker holds the lease while it renews it; when it stops
    renewing, another takes over after `expires_at`. One scheduler, however many workers."""

    name = models.CharField(max_length=40, unique=True)
    holder = models.CharField(max_length=100)
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name = verbose_name_plural = "调度租约"

    def __str__(self) -> str:
        return f"{self.name} → {self.holder}"
