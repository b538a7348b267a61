"""The console page of each hospital's HIS connection (系统管理员): mode, gateway, hospital code,
secret (write-only), timeouts, on/off, and 测试连接."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from guahao.console.modeladmin import ConsoleModelAdmin
from guahao.console.models import AuditEntry
from guahao.console.services import record_audit
from guahao.his import services
from guahao.his.models import HisConnection

SECRET_MASK = "******"  # what the audit log shows of a new secret


class HisConnectionForm(forms.ModelForm):
    """The secret is typed, never shown back: an empty field keeps the stored one."""

    base_url = forms.URLField(
        label="HIS 网关地址",
        max_length=300,
        required=False,
        assume_scheme="https",
        help_text="如 https://his-gateway.example.cn/guahao/v1（其后接 /locks、/registrations 等路径）",
    )
    new_secret = forms.CharField(
        label="共享密钥",
        required=False,
        strip=True,
        min_length=16,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="由 HIS 方提供，至少 16 个字符；保存后不再显示，留空则不修改",
    )

    class Meta:
        model = HisConnection
        fields = (
            "hospital",
            "mode",
            "base_url",
            "hospital_code",
            "connect_timeout_seconds",
            "read_timeout_seconds",
            "enabled",
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("new_secret"):
            # Set before the model's own clean, which requires a secret for the HIS modes.
            self.instance.secret = cleaned["new_secret"]
        return cleaned


@admin.register(HisConnection)
class HisConnectionAdmin(ConsoleModelAdmin):
    form = HisConnectionForm
    list_display = ("hospital", "mode", "base_url", "hospital_code", "enabled", "secret_state", "updated_at")
    list_filter = ("mode", "enabled")
    list_select_related = ("hospital",)
    actions = ("test_connection",)
    fieldsets = (
        (None, {"fields": ("hospital", "mode", "enabled")}),
        ("HIS 网关", {"fields": ("base_url", "hospital_code", "new_secret", "secret_state")}),
        ("超时", {"fields": ("connect_timeout_seconds", "read_timeout_seconds")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: HisConnection | None = None) -> tuple[str, ...]:
        # One connection per hospital: it stays with the hospital it was made for.
        return ("hospital", "secret_state") if obj is not None else ("secret_state",)

    @admin.display(description="密钥")
    def secret_state(self, obj: HisConnection | None) -> str:
        return "已设置" if obj is not None and obj.secret else "未设置"

    def save_model(self, request: HttpRequest, obj: HisConnection, form: HisConnectionForm, change: bool) -> None:
        # The audit row records the form's fields before and after: a new secret shows as a mask.
        if form.cleaned_data.get("new_secret"):
            form.cleaned_data["new_secret"] = SECRET_MASK
        super().save_model(request, obj, form, change)

    @admin.action(description="测试连接（签名请求 GET /schedule?days=1）", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[HisConnection]) -> None:
        for connection in queryset.select_related("hospital"):
            ok, outcome = services.check_connection(connection)
            record_audit(
                request=request,
                action=AuditEntry.Action.OTHER,
                obj=connection,
                hospital=connection.hospital,
                result=AuditEntry.Result.SUCCESS if ok else AuditEntry.Result.FAILURE,
                detail=f"测试 HIS 连接：{outcome}",
            )
            self.message_user(request, f"{connection.hospital}：{outcome}", level=messages.SUCCESS if ok else messages.ERROR)
