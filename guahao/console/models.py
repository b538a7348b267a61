"""Staff of the console and the audit log."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class StaffProfile(models.Model):
    """What the console knows about a staff account beyond Django's user: the hospitals it works
    for (it sees nothing else) and when its password was last changed (expires after 90 days)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_profile", verbose_name="账号"
    )
    hospitals = models.ManyToManyField("catalog.Hospital", verbose_name="所属医院", blank=True)
    password_changed_at = models.DateTimeField("密码修改时间", null=True, blank=True)
    # Set when someone else chose the password (createstaff, an administrator): the owner must
    # choose their own at the next sign-in.
    must_change_password = models.BooleanField("须修改密码", default=True)

    class Meta:
        verbose_name = verbose_name_plural = "员工资料"

    def __str__(self) -> str:
        return str(self.user)


class AuditEntry(models.Model):
    """One audited staff action. Append-only: no admin page changes or deletes a row, and on
    PostgreSQL a trigger refuses UPDATE and DELETE (migration 0002). Plain columns instead of
    foreign keys, so that nothing elsewhere (a deleted user or hospital) can ever rewrite a row.
    Rows are kept at least 180 days (等保三级 asks for six months): nothing in the application
    deletes them, and any archiving of older rows is a database operator's deliberate act."""

    class Action(models.TextChoices):
        LOGIN = "login", "登录"
        LOGOUT = "logout", "退出"
        LOGIN_FAILED = "login_failed", "登录失败"
        SESSION_EXPIRED = "session_expired", "超时退出"
        PASSWORD_CHANGED = "password_changed", "修改密码"
        REVEAL = "reveal", "查看完整个人信息"
        SEARCH_PII = "search_pii", "按完整证件号/手机号查找"
        CANCEL = "cancel", "代患者取消"
        REFUND = "refund", "退款"
        REFUND_RETRY = "refund_retry", "重试退款"
        REFUND_MANUAL = "refund_manual", "标记线下退款"
        ATTENDANCE = "attendance", "标记取号/就诊/爽约"
        SUSPEND = "suspend", "停诊"
        RESUME = "resume", "恢复出诊"
        ADD_SLOT = "add_slot", "加号"
        BAN = "ban", "限制预约"
        LIFT_BAN = "lift_ban", "解除限制"
        ADD = "add", "新增配置"
        CHANGE = "change", "修改配置"
        DELETE = "delete", "删除配置"
        EXPORT = "export", "导出"
        OTHER = "other", "其他"

    class Result(models.TextChoices):
        SUCCESS = "success", "成功"
        FAILURE = "failure", "失败"
        DENIED = "denied", "拒绝"

    at = models.DateTimeField("时间", db_index=True)
    staff_id = models.IntegerField("员工ID", null=True, blank=True)
    staff_username = models.CharField("员工", max_length=150, blank=True, db_index=True)
    hospital_id = models.IntegerField("医院ID", null=True, blank=True, db_index=True)
    hospital_name = models.CharField("医院", max_length=100, blank=True)
    action = models.CharField("操作", max_length=20, choices=Action.choices, db_index=True)
    object_type = models.CharField("对象类型", max_length=50, blank=True)
    object_id = models.CharField("对象ID", max_length=64, blank=True, db_index=True)
    object_repr = models.CharField("对象", max_length=200, blank=True)
    before = models.JSONField("修改前", null=True, blank=True)
    after = models.JSONField("修改后", null=True, blank=True)
    result = models.CharField("结果", max_length=10, choices=Result.choices, default=Result.SUCCESS)
    detail = models.CharField("说明", max_length=300, blank=True)
    client_ip = models.GenericIPAddressField("IP 地址", null=True, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "审计日志"
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.staff_username} {self.get_action_display()}"
