from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from guahao.catalog.pinyin import romanize, romanize_person
from guahao.payments.channels import (
    PaymentChannel,
    channel_labels,
    default_channels,
    in_channel_order,
)

# Pinyin columns hold at most six letters per character of the name.
_PINYIN_PER_CHAR = 6


def _save_with_pinyin(instance: models.Model, save, args, kwargs) -> None:
    """save() that refills the pinyin columns from the name, also when only `name` is saved."""
    instance.fill_pinyin()
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and "name" in update_fields:
        kwargs["update_fields"] = {*update_fields, "name_pinyin", "name_initials"}
    save(*args, **kwargs)


class Hospital(models.Model):
    code = models.CharField("编码", max_length=32, unique=True)
    name = models.CharField("名称", max_length=100)
    short_name = models.CharField("简称", max_length=40, blank=True)
    grade = models.CharField("等级", max_length=20, blank=True, help_text="如 三级甲等")
    address = models.CharField("地址", max_length=200, blank=True)
    service_phone = models.CharField("客服电话", max_length=40, blank=True)
    browse_level = models.PositiveSmallIntegerField(
        "患者浏览的科室层级", default=2, help_text="1–3：患者从哪一级科室开始选择"
    )
    schedule_days = models.PositiveSmallIntegerField("排班展示天数", default=14)
    payment_channels = models.JSONField(
        "支付渠道", default=default_channels, help_text="患者可选的支付方式：wechat 微信支付、alipay 支付宝、unionpay 银行卡"
    )
    is_active = models.BooleanField("启用", default=True)

    class Meta:
        verbose_name = verbose_name_plural = "医院"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(browse_level__gte=1, browse_level__lte=3), name="hospital_browse_level_1_3"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        channels = self.payment_channels
        if not isinstance(channels, list) or not channels or not set(channels) <= set(PaymentChannel.values):
            raise ValidationError({"payment_channels": f"请至少选择一种支付渠道：{channel_labels(PaymentChannel.values)}"})

    @property
    def offered_channels(self) -> list[str]:
        """The channels patients may pay with here, in the declared order (微信支付, 支付宝, 银行卡)."""
        return in_channel_order(self.payment_channels or [])


class Campus(models.Model):
    hospital = models.ForeignKey(Hospital, on_delete=models.CASCADE, related_name="campuses", verbose_name="医院")
    name = models.CharField("院区", max_length=60)
    address = models.CharField("地址", max_length=200, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "院区"

    def __str__(self) -> str:
        return self.name


class VisitorSex(models.TextChoices):
    """A department limited to one sex (values as the patient's own sex, patients.Patient.Sex)."""

    MALE = "M", "仅男性"
    FEMALE = "F", "仅女性"


class Department(models.Model):
    hospital = models.ForeignKey(Hospital, on_delete=models.CASCADE, related_name="departments", verbose_name="医院")
    campus = models.ForeignKey(Campus, on_delete=models.SET_NULL, null=True, blank=True, verbose_name="院区")
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True, related_name="children", verbose_name="上级科室")
    level = models.PositiveSmallIntegerField("层级", default=1)
    code = models.CharField("HIS 科室编码", max_length=32)
    name = models.CharField("名称", max_length=60)
    # Filled from the name on every save (search: `pfk`, `pifuke`); db_index also gives PostgreSQL
    # a varchar_pattern_ops index, so a prefix LIKE uses it.
    name_pinyin = models.CharField("拼音", max_length=60 * _PINYIN_PER_CHAR, blank=True, editable=False, db_index=True)
    name_initials = models.CharField("拼音首字母", max_length=60 * _PINYIN_PER_CHAR, blank=True, editable=False, db_index=True)
    intro = models.TextField("简介", blank=True)
    location = models.CharField("就诊位置", max_length=100, blank=True)
    sort_order = models.PositiveIntegerField("排序", default=0)
    is_active = models.BooleanField("启用", default=True)
    # Who the department sees (儿科 under 14, 妇科/产科 women), checked when a patient is chosen;
    # a parent's limits apply to its sub-departments too. See catalog/visitors.py.
    min_age = models.PositiveSmallIntegerField("最低年龄（岁，含）", null=True, blank=True)
    max_age = models.PositiveSmallIntegerField(
        "年龄上限（岁，不含）", null=True, blank=True, help_text="例如儿科填 14：仅接待就诊当天未满 14 岁的患者"
    )
    sex = models.CharField("限定性别", max_length=1, choices=VisitorSex.choices, blank=True, help_text="留空表示不限")

    class Meta:
        verbose_name = verbose_name_plural = "科室"
        ordering = ["sort_order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["hospital", "code"], name="department_code_per_hospital"),
            models.CheckConstraint(condition=models.Q(level__gte=1, level__lte=3), name="department_level_1_3"),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        _save_with_pinyin(self, super().save, args, kwargs)

    def fill_pinyin(self) -> None:
        """Set the pinyin columns from the name (save() does it; bulk_create callers call this)."""
        self.name_pinyin, self.name_initials = romanize(self.name)


class Doctor(models.Model):
    class Title(models.TextChoices):
        CHIEF = "chief", "主任医师"
        ASSOCIATE_CHIEF = "associate_chief", "副主任医师"
        ATTENDING = "attending", "主治医师"
        RESIDENT = "resident", "住院医师"

    hospital = models.ForeignKey(Hospital, on_delete=models.CASCADE, related_name="doctors", verbose_name="医院")
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="doctors", verbose_name="科室")
    code = models.CharField("HIS 医生编码", max_length=32)
    name = models.CharField("姓名", max_length=30)
    name_pinyin = models.CharField("拼音", max_length=30 * _PINYIN_PER_CHAR, blank=True, editable=False, db_index=True)
    name_initials = models.CharField("拼音首字母", max_length=30 * _PINYIN_PER_CHAR, blank=True, editable=False, db_index=True)
    title = models.CharField("职称", max_length=20, choices=Title.choices)
    specialty = models.CharField("擅长", max_length=300, blank=True)
    intro = models.TextField("简介", blank=True)
    sort_order = models.PositiveIntegerField("排序", default=0)
    is_active = models.BooleanField("启用", default=True)

    class Meta:
        verbose_name = verbose_name_plural = "医生"
        ordering = ["sort_order", "id"]
        constraints = [models.UniqueConstraint(fields=["hospital", "code"], name="doctor_code_per_hospital")]

    def __str__(self) -> str:
        return f"{self.name}（{self.get_title_display()}）"

    def save(self, *args, **kwargs) -> None:
        _save_with_pinyin(self, super().save, args, kwargs)

    def fill_pinyin(self) -> None:
        """Set the pinyin columns from the name, read as a person's (surname readings)."""
        self.name_pinyin, self.name_initials = romanize_person(self.name)


class Notice(models.Model):
    class Kind(models.TextChoices):
        REGISTRATION = "registration", "挂号须知"
        EPIDEMIC = "epidemic", "防疫须知"

    hospital = models.ForeignKey(Hospital, on_delete=models.CASCADE, related_name="notices", verbose_name="医院")
    kind = models.CharField("类型", max_length=20, choices=Kind.choices, default=Kind.REGISTRATION)
    version = models.PositiveIntegerField("版本", default=1)
    title = models.CharField("标题", max_length=100)
    body = models.TextField("正文")
    requires_ack = models.BooleanField("须患者确认", default=True)
    is_active = models.BooleanField("生效", default=True)
    published_at = models.DateTimeField("发布时间", auto_now_add=True)

    class Meta:
        verbose_name = verbose_name_plural = "须知"
        ordering = ["kind", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["hospital", "kind", "version"], name="notice_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.title} v{self.version}"


class NoticeAck(models.Model):
    notice = models.ForeignKey(Notice, on_delete=models.CASCADE, related_name="acks", verbose_name="须知")
    account = models.ForeignKey("patients.Account", on_delete=models.CASCADE, related_name="notice_acks", verbose_name="账号")
    acked_at = models.DateTimeField("确认时间")

    class Meta:
        verbose_name = verbose_name_plural = "须知确认"
        constraints = [models.UniqueConstraint(fields=["notice", "account"], name="notice_ack_once")]

    def __str__(self) -> str:
        return f"{self.notice} 已确认"
