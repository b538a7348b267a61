from __future__ import annotations

import datetime as dt

from django.core.validators import MaxValueValidator
from django.db import models


class RegistrationType(models.Model):
    hospital = models.ForeignKey("catalog.Hospital", on_delete=models.CASCADE, related_name="registration_types", verbose_name="医院")
    code = models.CharField("编码", max_length=20)
    name = models.CharField("号别", max_length=20, help_text="普通号 / 专家号 / 特需号")
    default_fee_fen = models.PositiveIntegerField("默认挂号费（分）")

    class Meta:
        verbose_name = verbose_name_plural = "号别"
        constraints = [models.UniqueConstraint(fields=["hospital", "code"], name="registration_type_code")]

    def __str__(self) -> str:
        return self.name


class ReleaseRule(models.Model):
    """How a hospital (or one department, overriding it) releases and guards its slots."""

    hospital = models.ForeignKey("catalog.Hospital", on_delete=models.CASCADE, related_name="release_rules", verbose_name="医院")
    department = models.ForeignKey(
        "catalog.Department", on_delete=models.CASCADE, null=True, blank=True,
        help_text="留空表示全院默认规则",
        verbose_name="科室",
    )
    release_time = models.TimeField("每日放号时间", default=dt.time(7, 0))
    window_days = models.PositiveSmallIntegerField("可预约天数", default=7)
    lock_minutes = models.PositiveSmallIntegerField("锁号时长（分钟）", default=10)
    cancel_deadline_hours = models.PositiveSmallIntegerField(
        "退号截止（就诊前小时数）", default=2, help_text="就诊时段开始前多少小时停止线上退号"
    )
    max_live_holds_per_account = models.PositiveSmallIntegerField("每账号同时锁号上限", default=2)
    max_holds_per_day_per_account = models.PositiveSmallIntegerField("每账号每日锁号上限", default=10)
    book_before_minutes = models.PositiveSmallIntegerField(
        "预约截止（时段开始前分钟数）",
        default=30,
        help_text="当天的排班开始后，尚未开始的就诊时段仍可预约，直到该时段开始前多少分钟",
    )
    register_cutoff_minutes = models.PositiveSmallIntegerField(
        "挂号结果确认截止（就诊前分钟数）",
        default=60,
        help_text="已支付但医院系统未确认挂号时，最迟在就诊时段开始前多少分钟放弃并自动退款",
    )
    offline_percent = models.PositiveSmallIntegerField(
        "线下预留比例（%）",
        default=0,
        validators=[MaxValueValidator(90)],
        help_text="每个排班的号源中留给现场挂号（窗口、老年人）的比例，0–90；这些号永不在线上放出",
    )

    class Meta:
        verbose_name = verbose_name_plural = "放号规则"
        constraints = [
            models.UniqueConstraint(fields=["hospital", "department"], name="release_rule_per_scope"),
            models.UniqueConstraint(
                fields=["hospital"], condition=models.Q(department__isnull=True), name="release_rule_one_default"
            ),
            models.CheckConstraint(condition=models.Q(offline_percent__lte=90), name="release_rule_offline_at_most_90"),
        ]

    def __str__(self) -> str:
        return f"{self.department or '全院'}放号规则"


class Session(models.Model):
    class Period(models.TextChoices):
        MORNING = "morning", "上午"
        AFTERNOON = "afternoon", "下午"
        EVENING = "evening", "夜间"

    class Status(models.TextChoices):
        OPEN = "open", "出诊"
        SUSPENDED = "suspended", "停诊"

    hospital = models.ForeignKey("catalog.Hospital", on_delete=models.CASCADE, related_name="sessions", verbose_name="医院")
    department = models.ForeignKey("catalog.Department", on_delete=models.PROTECT, related_name="sessions", verbose_name="科室")
    doctor = models.ForeignKey(
        "catalog.Doctor", on_delete=models.PROTECT, null=True, blank=True, related_name="sessions", verbose_name="医生"
    )
    registration_type = models.ForeignKey(RegistrationType, on_delete=models.PROTECT, verbose_name="号别")
    his_code = models.CharField("HIS 排班编码", max_length=40, blank=True)
    date = models.DateField("日期")
    period = models.CharField("时段", max_length=10, choices=Period.choices)
    starts_at = models.DateTimeField("开始")
    ends_at = models.DateTimeField("结束")
    fee_fen = models.PositiveIntegerField("挂号费（分）")
    capacity = models.PositiveIntegerField("线上号源数")
    status = models.CharField("状态", max_length=10, choices=Status.choices, default=Status.OPEN)
    suspend_reason = models.CharField("停诊原因", max_length=100, blank=True)
    suspended_at = models.DateTimeField("停诊时间", null=True, blank=True)
    # Set (compare-and-set, while suspended) when the 停诊 job starts settling bookings: from then
    # on the suspension cannot be undone (恢复出诊 requires it empty).
    settling_since = models.DateTimeField("停诊退号开始时间", null=True, blank=True)
    location = models.CharField("就诊地点", max_length=100, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "排班"
        permissions = [("suspend_session", "停诊或恢复出诊"), ("add_extra_slot", "加号")]
        ordering = ["date", "starts_at"]
        indexes = [models.Index(fields=["department", "date"]), models.Index(fields=["doctor", "date"])]
        constraints = [models.CheckConstraint(condition=models.Q(ends_at__gt=models.F("starts_at")), name="session_ends_after_start")]

    def __str__(self) -> str:
        who = self.doctor.name if self.doctor_id else self.department.name
        return f"{who} {self.date} {self.get_period_display()}"


class Slot(models.Model):
    """One bookable number. `state`/`held_until` are the claim a hold takes with one conditional
    UPDATE; a `held` slot whose `held_until` has passed counts as free, so expiry needs no sweeper."""

    # his_code of a slot taken outside guahao (at the window, by phone, by the demo loader): it is
    # BOOKED with no Hold or Registration here, so invariant checks must skip it.
    OFFLINE_CODE = "offline"

    class State(models.TextChoices):
        FREE = "free", "可预约"
        HELD = "held", "锁定中"
        BOOKED = "booked", "已预约"
        # Kept for walk-in and elderly patients (ReleaseRule.offline_percent): never free online,
        # since the claim matches state "free" only.
        OFFLINE = "offline", "线下预留"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="slots", verbose_name="排班")
    seq = models.PositiveIntegerField("序号")
    window_start = models.DateTimeField("时段开始")
    window_end = models.DateTimeField("时段结束")
    his_code = models.CharField("HIS 号源编码", max_length=40, blank=True)
    state = models.CharField("状态", max_length=10, choices=State.choices, default=State.FREE)
    held_until = models.DateTimeField("锁定至", null=True, blank=True)
    # 加号: a number added by staff after the session was made, and who added it.
    added_by = models.CharField("加号人", max_length=150, blank=True)
    added_at = models.DateTimeField("加号时间", null=True, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "号源"
        ordering = ["session", "seq"]
        indexes = [models.Index(fields=["session", "window_start", "state"])]
        constraints = [
            models.UniqueConstraint(fields=["session", "seq"], name="slot_seq_per_session"),
            # The ≤30-minute rule is checked where slots are made (scheduling.services).
            models.CheckConstraint(
                condition=models.Q(window_end__gt=models.F("window_start")), name="slot_window_ordered"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.session} #{self.seq}"


class WeeklyTemplate(models.Model):
    """One line of a department's weekly timetable (出诊模板): who sees patients on which weekday
    and period, with how many numbers. Staff make a week of sessions from these lines."""

    hospital = models.ForeignKey("catalog.Hospital", on_delete=models.CASCADE, related_name="weekly_templates", verbose_name="医院")
    department = models.ForeignKey("catalog.Department", on_delete=models.CASCADE, verbose_name="科室")
    doctor = models.ForeignKey("catalog.Doctor", on_delete=models.CASCADE, null=True, blank=True, verbose_name="医生",
                               help_text="留空表示科室普通门诊")
    registration_type = models.ForeignKey(RegistrationType, on_delete=models.PROTECT, verbose_name="号别")
    weekday = models.PositiveSmallIntegerField(
        "星期", choices=[(0, "星期一"), (1, "星期二"), (2, "星期三"), (3, "星期四"), (4, "星期五"), (5, "星期六"), (6, "星期日")]
    )
    period = models.CharField("时段", max_length=10, choices=Session.Period.choices)
    start = models.TimeField("开始时间")
    end = models.TimeField("结束时间")
    capacity = models.PositiveIntegerField("号源数")
    window_minutes = models.PositiveSmallIntegerField("分时段（分钟）", default=30)
    fee_fen = models.PositiveIntegerField("挂号费（分）", null=True, blank=True, help_text="留空则用号别的默认挂号费")
    location = models.CharField("就诊地点", max_length=100, blank=True)
    is_active = models.BooleanField("启用", default=True)

    class Meta:
        verbose_name = verbose_name_plural = "出诊模板"
        ordering = ["department", "weekday", "start"]

    def __str__(self) -> str:
        who = self.doctor.name if self.doctor_id else self.department.name
        return f"{who} {self.get_weekday_display()}{self.get_period_display()}"
