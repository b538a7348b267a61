"""The console's 公众号 pages: the hospital's AppID and secret (typed, never shown back), which
template each message type goes out with, and the patients' bindings (staff remove one when a
patient changed WeChat accounts)."""

from __future__ import annotations

import re

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from guahao import pii
from guahao.console.modeladmin import ConsoleModelAdmin
from guahao.console.models import AuditEntry
from guahao.console.selectors import hospital_ids_of
from guahao.console.services import record_audit
from guahao.notifications.templates import PLACEHOLDERS
from guahao.wechat.models import OfficialAccount, WechatBinding, WechatTemplate
from guahao.wechat.services import EXTRA_PLACEHOLDERS

SECRET_MASK = "******"
_APP_ID = re.compile(r"wx[0-9a-zA-Z]{16}")
_FIELD_KEY = re.compile(r"[a-z_]+[0-9]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class OfficialAccountForm(forms.ModelForm):
    new_app_secret = forms.CharField(
        label="AppSecret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="公众平台 → 设置与开发 → 基本配置 → 开发者密码；保存后不再显示，留空则不修改",
    )

    api_base = forms.URLField(label="接口地址", max_length=200, assume_scheme="https", initial="https://api.weixin.qq.com", help_text="仅开发与联调时改为模拟器地址")
    oauth_base = forms.URLField(label="网页授权地址", max_length=200, assume_scheme="https", initial="https://open.weixin.qq.com", help_text="仅开发与联调时改为模拟器地址")

    class Meta:
        model = OfficialAccount
        fields = ("hospital", "app_id", "enabled", "api_base", "oauth_base")

    def clean_app_id(self) -> str:
        value = self.cleaned_data["app_id"].strip()
        if not _APP_ID.fullmatch(value):
            raise forms.ValidationError("AppID 应为 wx 开头的 18 位字符")
        return value

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("new_app_secret"):
            self.instance.app_secret = cleaned["new_app_secret"]
        elif not self.instance.app_secret:
            raise forms.ValidationError({"new_app_secret": "请填写 AppSecret"})
        return cleaned


class WechatTemplateForm(forms.ModelForm):
    class Meta:
        model = WechatTemplate
        fields = ("topic", "template_id", "data")

    def clean_data(self) -> dict:
        data = self.cleaned_data.get("data")
        if not isinstance(data, dict) or not data:
            raise forms.ValidationError('请填写字段映射，如 {"thing1": "{科室}", "time2": "{就诊时间}"}')
        known = set(PLACEHOLDERS) | set(EXTRA_PLACEHOLDERS)
        for key, value in data.items():
            if not _FIELD_KEY.fullmatch(str(key)):
                raise forms.ValidationError(f"模板字段名 {key} 无效，应与公众平台模板详情中的字段一致，如 thing1")
            if not isinstance(value, str):
                raise forms.ValidationError(f"字段 {key} 的内容应为文字")
            unknown = [name for name in _PLACEHOLDER.findall(value) if name not in known]
            if unknown:
                raise forms.ValidationError(f"字段 {key} 中的占位符 {{{unknown[0]}}} 不存在；可用：" + "、".join(sorted(known)))
        return data


class WechatTemplateInline(admin.TabularInline):
    model = WechatTemplate
    form = WechatTemplateForm
    extra = 0
    verbose_name = verbose_name_plural = "模板消息（每种消息类型一个模板）"


@admin.register(OfficialAccount)
class OfficialAccountAdmin(ConsoleModelAdmin):
    form = OfficialAccountForm
    hospital_field = "hospital"
    list_display = ("hospital", "app_id", "enabled", "secret_state", "templates_count", "endpoint_label", "updated_at")
    list_filter = ("enabled",)
    list_select_related = ("hospital",)
    inlines = (WechatTemplateInline,)
    actions = ("test_account",)
    fieldsets = (
        (None, {"fields": ("hospital", "enabled")}),
        ("开发者信息", {"fields": ("app_id", "new_app_secret", "secret_state")}),
        ("联调", {"fields": ("api_base", "oauth_base"), "classes": ("collapse",)}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: OfficialAccount | None = None) -> tuple[str, ...]:
        # Bindings are per AppID: another AppID is another 公众号, set up as a new row.
        return ("hospital", "app_id", "secret_state") if obj is not None else ("secret_state",)

    @admin.display(description="AppSecret")
    def secret_state(self, obj: OfficialAccount | None) -> str:
        return "已设置" if obj is not None and obj.app_secret else "未设置"

    @admin.display(description="模板数")
    def templates_count(self, obj: OfficialAccount) -> int:
        return obj.templates.count()

    @admin.display(description="接口")
    def endpoint_label(self, obj: OfficialAccount) -> str:
        return "正式环境" if obj.api_base.startswith("https://api.weixin.qq.com") else obj.api_base

    def save_model(self, request: HttpRequest, obj: OfficialAccount, form: OfficialAccountForm, change: bool) -> None:
        if form.cleaned_data.get("new_app_secret"):
            form.cleaned_data["new_app_secret"] = SECRET_MASK  # the audit row shows a mask
        super().save_model(request, obj, form, change)

    @admin.action(description="测试公众号（获取 access_token，验证 AppID 与 AppSecret）", permissions=["change"])
    def test_account(self, request: HttpRequest, queryset: QuerySet[OfficialAccount]) -> None:
        from guahao.wechat import tokens
        from guahao.wechat.client import WechatApiError, WechatUnavailable

        for official in queryset.select_related("hospital"):
            try:
                tokens.access_token(official)
                ok, outcome = True, "正常"
            except WechatApiError as exc:
                ok, outcome = False, f"微信错误 {exc.errcode}：{exc.errmsg}"
            except WechatUnavailable as exc:
                ok, outcome = False, f"无法连接微信：{exc}"
            record_audit(
                request=request,
                action=AuditEntry.Action.OTHER,
                obj=official,
                hospital=official.hospital,
                result=AuditEntry.Result.SUCCESS if ok else AuditEntry.Result.FAILURE,
                detail=f"测试公众号：{outcome}",
            )
            self.message_user(request, f"{official}：{outcome}", level=messages.SUCCESS if ok else messages.ERROR)


@admin.register(WechatBinding)
class WechatBindingAdmin(ConsoleModelAdmin):
    hospital_field = None  # scoped by AppID below
    list_display = ("app_id", "masked_openid", "masked_phone", "bound_at")
    list_filter = ("app_id",)
    fields = ("app_id", "masked_openid", "masked_phone", "bound_at")
    readonly_fields = fields
    ordering = ("-bound_at",)

    def scope(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        ids = hospital_ids_of(request.user)
        if ids is None:
            return queryset
        app_ids = OfficialAccount.objects.filter(hospital_id__in=ids).values_list("app_id", flat=True)
        return queryset.filter(app_id__in=list(app_ids))

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("account")

    @admin.display(description="OpenID")
    def masked_openid(self, obj: WechatBinding) -> str:
        return f"{obj.openid[:6]}****{obj.openid[-4:]}" if len(obj.openid) > 10 else "****"

    @admin.display(description="账号手机号")
    def masked_phone(self, obj: WechatBinding) -> str:
        return pii.mask_phone(obj.account.phone)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # made by the patient's sign-in inside WeChat

    def has_change_permission(self, request: HttpRequest, obj: WechatBinding | None = None) -> bool:
        return False
