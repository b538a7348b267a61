from __future__ import annotations

from django.db import models


class Restriction(models.Model):
    """A booking ban on a real person (by ID blind index, so it follows them across accounts).
    In force from its creation to `until` inclusive, unless lifted by staff (`lifted_at`); the
    daily sweep stamps `ended_at` once `until` has passed."""

    class Rule(models.TextChoices):
        NO_SHOW = "no_show", "爽约过多"
        CANCEL = "cancel", "退号过多"
        MANUAL = "manual", "医院设置"

    hospital = models.ForeignKey("catalog.Hospital", on_delete=models.CASCADE, related_name="restrictions", verbose_name="医院")
    patient_index = models.CharField(max_length=64, db_index=True)
    rule = models.CharField("规则", max_length=10, choices=Rule.choices, default=Rule.MANUAL)
    # Whose booking earned a rule's ban (the account told about it); empty for a ban staff set.
    account = models.ForeignKey(
        "patients.Account", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", verbose_name="账号"
    )
    reason = models.CharField("原因", max_length=100)
    until = models.DateField("限制至（含）")
    created_at = models.DateTimeField()
    lifted_at = models.DateTimeField("解除时间", null=True, blank=True)
    ended_at = models.DateTimeField("到期时间", null=True, blank=True)
    created_by = models.CharField("设置人", max_length=150, blank=True)
    lifted_by = models.CharField("解除人", max_length=150, blank=True)
    lift_reason = models.CharField("解除原因", max_length=100, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "预约限制"
        permissions = [("lift_restriction", "解除预约限制")]
        indexes = [models.Index(fields=["hospital", "patient_index", "rule"])]

    def __str__(self) -> str:
        return f"{self.reason}（至 {self.until}）"


class Policy(models.Model):
    """A hospital's no-show and cancellation policy (爽约与退号规则). Defaults follow the rules
    Beijing publishes; the policy engine applies them."""

    hospital = models.OneToOneField("catalog.Hospital", on_delete=models.CASCADE, related_name="policy", verbose_name="医院")
    no_show_limit = models.PositiveSmallIntegerField("爽约次数上限", default=3, help_text="0 表示不因爽约限制预约")
    no_show_window_days = models.PositiveSmallIntegerField("爽约统计周期（天）", default=90)
    no_show_ban_days = models.PositiveSmallIntegerField("爽约后暂停预约（天）", default=90)
    no_show_grace_minutes = models.PositiveSmallIntegerField(
        "爽约判定宽限（分钟）", default=30, help_text="排班结束后多少分钟仍未取号，记为爽约"
    )
    cancel_limit = models.PositiveSmallIntegerField(
        "退号次数上限", default=3, help_text="只计患者自行退号（不含医院代退、停诊）；0 表示不因退号限制预约"
    )
    cancel_window_days = models.PositiveSmallIntegerField("退号统计周期（天）", default=30)
    cancel_ban_days = models.PositiveSmallIntegerField("退号过多后暂停预约（天）", default=30)
    # Counted by the real person across every account, live holds with the person chosen included.
    max_per_day = models.PositiveSmallIntegerField(
        "每位就诊人每日挂号上限", default=3, help_text="同一就诊日，按身份证件计（含其他账号、待支付锁号）；0 表示不限"
    )
    max_per_department_per_day = models.PositiveSmallIntegerField(
        "每位就诊人同一科室每日挂号上限", default=1, help_text="0 表示不限"
    )

    class Meta:
        verbose_name = verbose_name_plural = "爽约与退号规则"

    def __str__(self) -> str:
        return f"{self.hospital}爽约与退号规则"
