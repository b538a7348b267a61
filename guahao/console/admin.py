"""The console's own pages: staff accounts (roles, hospitals, second factor) and the audit log."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

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


admin.site.unregister(User)


@admin.register(User)
class StaffAdmin(UserAdmin):
    """Staff accounts. A system administrator sees the staff of their own hospitals; roles are the
    five groups, and only a superuser makes another superuser."""

    inlines = (StaffProfileInline,)
    list_display = ("username", "first_name", "roles", "is_active", "last_login")
    list_filter = ("is_active", "groups")
    search_fields = ("username", "first_name")
    actions = ("reset_totp",)
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("个人信息", {"fields": ("first_name", "email")}),
        ("角色", {"fields": ("is_active", "is_staff", "groups")}),
        ("登录记录", {"fields": ("last_login", "date_joined")}),
    )
    readonly_fields = ("last_login", "date_joined")

    @admin.display(description="角色")
    def roles(self, obj) -> str:
        return "、".join(g.name for g in obj.groups.all()) or "—"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        qs = super().get_queryset(request).prefetch_related("groups")
        ids = hospital_ids_of(request.user)
        if ids is None:
            return qs
        return qs.filter(Q(staff_profile__hospitals__in=ids) | Q(pk=request.user.pk)).distinct().filter(is_superuser=False)

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
        super().save_related(request, form, formsets, change)
        StaffProfile.objects.get_or_create(user=form.instance)

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


def record_action(change: bool) -> str:
    return AuditEntry.Action.CHANGE if change else AuditEntry.Action.ADD


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit log: read by the auditor, changed by nobody (not even a superuser)."""

    list_display = ("at", "staff_username", "action", "result", "hospital_name", "object_type", "object_repr", "client_ip", "detail")
    list_filter = ("action", "result", ("at", admin.DateFieldListFilter), "object_type")
    search_fields = ("staff_username", "object_id", "object_repr", "detail", "client_ip")
    search_help_text = "按员工、对象ID、对象、说明或 IP 查找"
    date_hierarchy = "at"
    readonly_fields = tuple(f.name for f in AuditEntry._meta.fields)
    list_per_page = 50

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
