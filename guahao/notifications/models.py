from __future__ import annotations

import datetime as dt

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
    # Set when the event failed MAX_ATTEMPTS times: no worker takes it again until staff retry it.
    parked_at = models.DateTimeField("搁置时间", null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "后台事件"
        permissions = [("retry_event", "重新处理搁置的事件")]
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


class Topic(models.TextChoices):
    """The events a patient hears about, each with a template (templates.DEFAULTS)."""

    HOLD_FAILED = "hold.failed", "预约失败"
    BOOKED = "registration.booked", "预约成功"
    REFUNDING = "registration.refunding", "取消并开始退费"
    CANCELLED = "registration.cancelled", "已取消（退款完成）"
    REFUND_FAILED = "refund.failed", "退款转人工处理"
    REMINDER_DAY_BEFORE = "reminder.day_before", "就诊提醒（前一天）"
    REMINDER_SOON = "reminder.soon", "就诊提醒（就诊前）"
    SUSPENDED = "session.suspended_notice", "停诊通知"
    NO_SHOW = "registration.no_show", "爽约记录"
    BAN_APPLIED = "restriction.created", "暂停预约"
    BAN_LIFTED = "restriction.lifted", "恢复预约"


class Delivery(models.Model):
    """One event's message to one outside channel (公众号, SMS, log). Unique per (event, channel):
    however often the event is handled, each channel gets it once. Drained by the worker like the
    outbox (claim token, back-off), parked after MAX_ATTEMPTS for staff to retry."""

    class State(models.TextChoices):
        PENDING = "pending", "待发送"
        SENT = "sent", "已发送"
        REFUSED = "refused", "无法送达"  # the channel said no for good (e.g. the user unfollowed)
        PARKED = "parked", "已搁置"

    event = models.ForeignKey(OutboxEvent, on_delete=models.CASCADE, related_name="deliveries", verbose_name="事件")
    channel = models.CharField("渠道", max_length=100)
    account = models.ForeignKey("patients.Account", on_delete=models.CASCADE, related_name="+", verbose_name="账号")
    hospital = models.ForeignKey("catalog.Hospital", on_delete=models.CASCADE, null=True, related_name="+", verbose_name="医院")
    topic = models.CharField("消息类型", max_length=40, choices=Topic.choices)
    title = models.CharField("标题", max_length=60)
    text = models.TextField("内容")
    # The template's variables, already masked: the 公众号 and SMS templates fill their own fields.
    params = models.JSONField(default=dict)
    state = models.CharField("状态", max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField("尝试次数", default=0)
    created_at = models.DateTimeField("创建时间")
    available_at = models.DateTimeField()
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True)
    sent_at = models.DateTimeField("发送时间", null=True, blank=True)
    provider_ref = models.CharField("渠道流水号", max_length=64, blank=True)
    last_error = models.CharField("最近错误", max_length=300, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "消息发送"
        permissions = [("retry_delivery", "重新发送消息")]
        constraints = [models.UniqueConstraint(fields=["event", "channel"], name="one_delivery_per_event_channel")]
        indexes = [models.Index(fields=["state", "available_at"])]

    def __str__(self) -> str:
        return f"{self.get_topic_display()} → {self.channel}"


class InboxMessage(models.Model):
    """The in-app message list (消息): every message a patient is sent, kept for them to read."""

    account = models.ForeignKey("patients.Account", on_delete=models.CASCADE, related_name="inbox", verbose_name="账号")
    hospital = models.ForeignKey("catalog.Hospital", on_delete=models.SET_NULL, null=True, related_name="+", verbose_name="医院")
    event = models.ForeignKey(OutboxEvent, on_delete=models.SET_NULL, null=True, related_name="+")
    topic = models.CharField("消息类型", max_length=40, choices=Topic.choices)
    title = models.CharField("标题", max_length=60)
    text = models.TextField("内容")
    # Where the message leads in the H5 (a registration's page), if anywhere.
    link = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField("时间")
    read_at = models.DateTimeField("已读时间", null=True, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "站内消息"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["account", "read_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["event", "account"], condition=models.Q(event__isnull=False), name="one_inbox_message_per_event"
            )
        ]

    def __str__(self) -> str:
        return self.title


class MessageTemplate(models.Model):
    """A hospital's wording of one message (templates.DEFAULTS when it has none). Placeholders in
    braces, e.g. {就诊人}; patients' data are masked before they are filled in."""

    hospital = models.ForeignKey("catalog.Hospital", on_delete=models.CASCADE, related_name="message_templates", verbose_name="医院")
    topic = models.CharField("消息类型", max_length=40, choices=Topic.choices)
    title = models.CharField("标题", max_length=30)
    body = models.TextField("内容")
    updated_at = models.DateTimeField("修改时间", auto_now=True)

    class Meta:
        verbose_name = verbose_name_plural = "消息模板"
        constraints = [models.UniqueConstraint(fields=["hospital", "topic"], name="one_template_per_hospital_topic")]

    def __str__(self) -> str:
        return f"{self.hospital} · {self.get_topic_display()}"


class MessagingSettings(models.Model):
    """Per hospital: which outside channels carry its messages, and when visit reminders go out.
    The in-app list always gets every message."""

    hospital = models.OneToOneField("catalog.Hospital", on_delete=models.CASCADE, related_name="messaging", verbose_name="医院")
    wechat_enabled = models.BooleanField("公众号模板消息", default=False, help_text="需先配置医院公众号")
    sms_enabled = models.BooleanField("短信", default=False)
    sms_sign_name = models.CharField("短信签名", max_length=30, blank=True)
    # topic → the SMS provider's approved template code; a topic without one sends no SMS.
    sms_templates = models.JSONField("短信模板编码", default=dict, blank=True)
    remind_day_before = models.BooleanField("就诊前一天提醒", default=True)
    remind_day_before_at = models.TimeField("前一天提醒时间", default=dt.time(18, 0))
    remind_hours_before = models.PositiveSmallIntegerField("就诊前几小时提醒", default=2, help_text="0 表示不提醒")

    class Meta:
        verbose_name = verbose_name_plural = "消息设置"

    def __str__(self) -> str:
        return f"{self.hospital}消息设置"


class Reminder(models.Model):
    """A visit reminder already enqueued: one per registration and kind, so no reminder goes twice."""

    registration = models.ForeignKey("booking.Registration", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["registration", "kind"], name="one_reminder_per_kind")]

    def __str__(self) -> str:
        return f"{self.registration_id}:{self.kind}"


class JobRun(models.Model):
    """A scheduled job's run for one due moment (`key`, e.g. "reconcile:2026-11-26"): the unique key
    makes the scheduler enqueue it once, whichever process holds the lease; `started_at` is taken by
    compare-and-set, so one worker runs it."""

    key = models.CharField("任务", max_length=100, unique=True)
    holder = models.CharField("调度者", max_length=100)
    created_at = models.DateTimeField("计划时间")
    started_at = models.DateTimeField("开始", null=True, blank=True)
    runner = models.CharField("执行者", max_length=100, blank=True)
    finished_at = models.DateTimeField("完成", null=True, blank=True)
    result = models.CharField("结果", max_length=200, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "定时任务记录"

    def __str__(self) -> str:
        return self.key
