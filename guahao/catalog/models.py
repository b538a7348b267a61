from __future__ import annotations

from django.db import models


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


class Campus(models.Model):
    hospital = models.ForeignKey(Hospital, on_delete=models.CASCADE, related_name="campuses")
    name = models.CharField("院区", max_length=60)
    address = models.CharField("地址", max_length=200, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "院区"

    def __str__(self) -> str:
        return self.name


class Department(models.Model):
    hospital = models.ForeignKey(Hospital, on_delete=models.CASCADE, related_name="departments")
    campus = models.ForeignKey(Campus, on_delete=models.SET_NULL, null=True, blank=True)
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True, related_name="children")
    level = models.PositiveSmallIntegerField("层级", default=1)
    code = models.CharField("HIS 科室编码", max_length=32)
    name = models.CharField("名称", max_length=60)
    intro = models.TextField("简介", blank=True)
    location = models.CharField("就诊位置", max_length=100, blank=True)
    sort_order = models.PositiveIntegerField("排序", default=0)
    is_active = models.BooleanField("启用", default=True)

    class Meta:
        verbose_name = verbose_name_plural = "科室"
        ordering = ["sort_order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["hospital", "code"], name="department_code_per_hospital"),
            models.CheckConstraint(condition=models.Q(level__gte=1, level__lte=3), name="department_level_1_3"),
        ]

    def __str__(self) -> str:
        return self.name


class Doctor(models.Model):
    class Title(models.TextChoices):
        CHIEF = "chief", "主任医师"
        ASSOCIATE_CHIEF = "associate_chief", "副主任医师"
        ATTENDING = "attending", "主治医师"
        RESIDENT = "resident", "住院医师"

    hospital = models.ForeignKey(Hospital, on_delete=models.CASCADE, related_name="doctors")
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="doctors")
    code = models.CharField("HIS 医生编码", max_length=32)
    name = models.CharField("姓名", max_length=30)
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


class Notice(models.Model):
    class Kind(models.TextChoices):
        REGISTRATION = "registration", "挂号须知"
        EPIDEMIC = "epidemic", "防疫须知"

    hospital = models.ForeignKey(Hospital, on_delete=models.CASCADE, related_name="notices")
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
    notice = models.ForeignKey(Notice, on_delete=models.CASCADE, related_name="acks")
    account = models.ForeignKey("patients.Account", on_delete=models.CASCADE, related_name="notice_acks")
    acked_at = models.DateTimeField("确认时间")

    class Meta:
        verbose_name = verbose_name_plural = "须知确认"
        constraints = [models.UniqueConstraint(fields=["notice", "account"], name="notice_ack_once")]

    def __str__(self) -> str:
        return f"{self.notice} 已确认"
