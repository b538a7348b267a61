"""The console's own pages: staff accounts (roles, hospitals, second factor) and the audit log."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from axes.models import AccessAttempt
from django import forms
from django.apps import apps
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django_otp.plugins.otp_totp.models import TOTPDevice

from guahao import clock
from guahao.console import roles
from guahao.console.models import AuditEntry, StaffProfile
from guahao.console.selectors import hospital_ids_of
from guahao.console.services import enrol_totp, note_password_changed, record_audit, totp_secret

User = get_user_model()


class StaffProfileInline(admin.StackedInline):
    model = StaffProfile
    can_delete = False
    fields = ("hospitals", "password_changed_at", "must_change_password")
    readonly_fields = ("password_changed_at",)
    filter_horizontal = ("hospitals",)
    verbose_name = verbose_name_plural = "所属医院与密码"

    def formfield_for_manytomany(self, db_field, request: HttpRequest, **kwargs):
        # A system administrator places staff only in their own hospitals.
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        ids = hospital_ids_of(request.user)
        if db_field.name == "hospitals" and ids is not None:
            field.queryset = field.queryset.filter(id__in=ids)
        return field


admin.site.unregister(User)

# django-otp's device page shows any staff member's secret as a QR code: a second factor is bound
# in person (createstaff, or 重新绑定身份验证器 on the staff page), never read off the console.
import django_otp.plugins.otp_totp.admin  # noqa: E402,F401  (registers the page, so it can be removed)

admin.site.unregister(TOTPDevice)


@admin.register(User)
class StaffAdmin(UserAdmin):
    """Staff accounts. A system administrator sees the staff of their own hospitals; roles are the
    five groups, and only a superuser makes another superuser."""

    inlines = (StaffProfileInline,)
    list_display = ("username", "first_name", "roles", "hospitals", "totp_bound", "locked_out", "is_active", "last_login")
    list_filter = ("is_active", ("groups", admin.RelatedOnlyFieldListFilter))
    search_fields = ("username", "first_name")
    search_help_text = "按用户名或姓名查找"
    actions = ("reset_totp",)
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("个人信息", {"fields": ("first_name", "email")}),
        ("角色", {"fields": ("is_active", "is_staff", "groups")}),
        ("登录记录", {"fields": ("last_login", "date_joined")}),
    )
    # Only a superuser sees (and so can set) superuser status and permissions outside the roles.
    superuser_fieldsets = (("超级用户与单独授权", {"fields": ("is_superuser", "user_permissions")}),)
    readonly_fields = ("last_login", "date_joined")

    @admin.display(description="角色")
    def roles(self, obj) -> str:
        names = [g.name for g in obj.groups.all()]
        if obj.is_superuser:
            names.insert(0, "超级用户")
        return "、".join(names) or "—"

    @admin.display(description="所属医院")
    def hospitals(self, obj) -> str:
        profile = getattr(obj, "staff_profile", None)
        if profile is None:
            return "—"
        return "、".join(h.short_name or h.name for h in profile.hospitals.all()) or "—"

    @admin.display(description="已绑定身份验证器", boolean=True, ordering="has_totp")
    def totp_bound(self, obj) -> bool:
        return obj.has_totp

    @admin.display(description="登录锁定", boolean=True)
    def locked_out(self, obj) -> bool:
        # Shown as a warning sign: True means the account cannot sign in now.
        return obj.is_locked_out

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        cool_off_since = clock.now() - settings.AXES_COOLOFF_TIME
        qs = (
            super()
            .get_queryset(request)
            .select_related("staff_profile")
            .prefetch_related("groups", "staff_profile__hospitals")
            .annotate(
                has_totp=Exists(TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)),
                is_locked_out=Exists(
                    AccessAttempt.objects.filter(
                        username=OuterRef("username"),
                        failures_since_start__gte=settings.AXES_FAILURE_LIMIT,
                        attempt_time__gte=cool_off_since,
                    )
                ),
            )
        )
        ids = hospital_ids_of(request.user)
        if ids is None:
            return qs
        own = User.objects.filter(Q(staff_profile__hospitals__in=ids) | Q(pk=request.user.pk)).values("pk")
        return qs.filter(pk__in=own, is_superuser=False)

    def get_fieldsets(self, request: HttpRequest, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and request.user.is_superuser:
            return (*fieldsets, *self.superuser_fieldsets)
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None and obj.pk == request.user.pk and not request.user.is_superuser:
            # Nobody grants themself a role or re-enables themself: another administrator does.
            return (*fields, "groups", "is_active", "is_staff")
        return fields

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if "groups" in form.base_fields:
            form.base_fields["groups"].help_text = "角色决定可见的页面与可做的操作；一人可兼多个角色，审计管理员除外"
            return _with_auditor_alone(form)
        return form

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        record_audit(
            request=request,
            action=record_action(change),
            obj=obj,
            before={f: str(form.initial.get(f)) for f in form.changed_data if f != "password"} if change else None,
            after={f: str(form.cleaned_data.get(f)) for f in form.changed_data if f not in ("password", "password1", "password2")},
        )
        if not change:
            note_password_changed(user=obj, by_owner=False)

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        # The editor sees only their own hospitals in the form: the others stay as they were.
        ids = hospital_ids_of(request.user)
        profile = StaffProfile.objects.filter(user=form.instance).first()
        kept = list(profile.hospitals.exclude(id__in=ids)) if profile and ids is not None else []
        super().save_related(request, form, formsets, change)
        profile, _ = StaffProfile.objects.get_or_create(user=form.instance)
        if kept:
            profile.hospitals.add(*kept)

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = ""):
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:
            user = User.objects.get(pk=id)
            by_owner = user.pk == request.user.pk
            note_password_changed(user=user, by_owner=by_owner)
            record_audit(request=request, action=AuditEntry.Action.PASSWORD_CHANGED, obj=user,
                         detail="本人修改" if by_owner else "管理员重置，须在下次登录时修改")
        return response

    @admin.action(description="重新绑定身份验证器（旧的动态验证码立即失效）")
    def reset_totp(self, request: HttpRequest, queryset: QuerySet) -> None:
        for user in queryset:
            url = enrol_totp(user=user)
            record_audit(request=request, action=AuditEntry.Action.CHANGE, obj=user, detail="重新绑定身份验证器")
            self.message_user(
                request,
                f"{user.username} 的新密钥：{totp_secret(url)}（仅显示一次，请当面交给本人录入身份验证器）",
                level=messages.WARNING,
            )


def _with_auditor_alone(form_class: type[forms.ModelForm]) -> type[forms.ModelForm]:
    """The auditor checks everyone else's actions, so holds no other role (三权分立)."""

    class AuditorAlone(form_class):
        def clean_groups(self):
            groups = self.cleaned_data.get("groups")
            names = {g.name for g in groups} if groups is not None else set()
            if roles.AUDITOR in names and len(names) > 1:
                raise forms.ValidationError("审计管理员不能兼任其他角色")
            return groups

    return AuditorAlone


def record_action(change: bool) -> str:
    return AuditEntry.Action.CHANGE if change else AuditEntry.Action.ADD


admin.site.unregister(Group)


@admin.register(Group)
class RoleAdmin(GroupAdmin):
    """The five roles are Django groups kept in step with guahao/console/roles.py after every
    migrate: read here, changed in that table."""

    list_display = ("name", "member_count")
    search_help_text = "按角色名称查找"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(n_members=Count("user"))

    @admin.display(description="人数", ordering="n_members")
    def member_count(self, obj: Group) -> int:
        return obj.n_members


@cache
def _field_labels() -> dict[str, dict[str, str]]:
    """verbose_name of a model → its fields' labels: how an audit row's object_type (the model's
    verbose name) finds the Chinese names of the fields in its before/after."""
    labels: dict[str, dict[str, str]] = {}
    for model in apps.get_models():
        fields = {f.name: str(getattr(f, "verbose_name", f.name)) for f in model._meta.get_fields()}
        labels.setdefault(str(model._meta.verbose_name), {}).update(fields)
    return labels


def readable_change(object_type: str, values: dict | None) -> str:
    """before/after as indented JSON with Chinese field names (the code name in brackets)."""
    if not values:
        return ""
    labels = _field_labels().get(object_type, {})
    named: dict[str, Any] = {
        (f"{labels[key]}（{key}）" if key in labels and labels[key] != key else key): value
        for key, value in values.items()
    }
    return json.dumps(named, ensure_ascii=False, indent=2, sort_keys=False)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit log: read by the auditor, changed by nobody (not even a superuser): no add,
    change or delete permission, no bulk action; on PostgreSQL the database refuses as well."""

    list_display = ("at", "staff_username", "action", "result", "hospital_name", "object_type", "object_repr", "client_ip", "detail")
    list_filter = ("action", "result", ("at", admin.DateFieldListFilter), "object_type")
    search_fields = ("staff_username", "object_id", "object_repr", "detail", "client_ip")
    search_help_text = "按员工用户名、对象ID、对象、说明或 IP 地址查找"
    date_hierarchy = "at"
    fieldsets = (
        (None, {"fields": ("at", "staff_username", "staff_id", "action", "result", "detail", "client_ip")}),
        ("对象", {"fields": ("hospital_name", "hospital_id", "object_type", "object_id", "object_repr")}),
        ("修改内容", {"fields": ("before_readable", "after_readable")}),
    )
    readonly_fields = (*(f.name for f in AuditEntry._meta.fields), "before_readable", "after_readable")
    list_per_page = 50
    actions = None

    @admin.display(description="修改前")
    def before_readable(self, obj: AuditEntry) -> str:
        return self._pre(readable_change(obj.object_type, obj.before))

    @admin.display(description="修改后")
    def after_readable(self, obj: AuditEntry) -> str:
        return self._pre(readable_change(obj.object_type, obj.after))

    @staticmethod
    def _pre(text: str) -> str:
        return format_html("<pre>{}</pre>", text) if text else "—"

    def get_actions(self, request: HttpRequest) -> dict:
        return {}

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        qs = super().get_queryset(request)
        ids = hospital_ids_of(request.user)
        if ids is None:
            return qs
        # Sign-ins carry no hospital; the auditor sees those of their hospitals' staff too.
        staff_ids = StaffProfile.objects.filter(hospitals__in=ids).values("user_id")
        return qs.filter(Q(hospital_id__in=ids) | Q(hospital_id__isnull=True, staff_id__in=staff_ids))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
