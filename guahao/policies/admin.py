"""Restrictions and the 爽约与退号规则 in the console. For a ban the operator types the patient's
document; only its blind index is stored, so the ban follows the real person without the console
keeping another copy of the ID. Adding and lifting a ban are audited; lifting needs a reason."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from guahao import clock
from guahao.console.modeladmin import ConsoleModelAdmin
from guahao.console.models import AuditEntry
from guahao.console.selectors import hospital_ids_of
from guahao.console.services import record_audit
from guahao.errors import GuahaoError, InvalidInput
from guahao.patients.models import Patient
from guahao.policies import services
from guahao.policies.models import Policy, Restriction

LIFT_PERM = "policies.lift_restriction"


class RestrictionForm(forms.ModelForm):
    id_type = forms.ChoiceField(label="证件类型", choices=Patient.IdType.choices)
    id_number = forms.CharField(label="证件号码", max_length=18, help_text="仅用于计算检索索引，不以明文保存")

    class Meta:
        model = Restriction
        fields = ("hospital", "reason", "until")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        from guahao.patients.idcard import parse_id_number

        try:
            parse_id_number(cleaned.get("id_number", ""), id_type=cleaned.get("id_type", ""))
        except InvalidInput as exc:
            self.add_error("id_number", exc.message)
        if not (cleaned.get("reason") or "").strip():
            self.add_error("reason", "请填写限制原因")
        until = cleaned.get("until")
        if until is not None and until < clock.today():
            self.add_error("until", "限制截止日期不能早于今天")
        return cleaned


class LiftForm(forms.Form):
    reason = forms.CharField(label="解除原因", max_length=100, help_text="例如：患者申诉核实为医院原因爽约")


class RestrictionStateFilter(admin.SimpleListFilter):
    title = "状态"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "生效中"), ("expired", "已到期"), ("lifted", "已解除")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        today = clock.today()
        if self.value() == "active":
            return queryset.filter(lifted_at__isnull=True, ended_at__isnull=True, until__gte=today)
        if self.value() == "expired":
            return queryset.filter(lifted_at__isnull=True).filter(Q(until__lt=today) | Q(ended_at__isnull=False))
        if self.value() == "lifted":
            return queryset.filter(lifted_at__isnull=False)
        return queryset


@admin.register(Restriction)
class RestrictionAdmin(ConsoleModelAdmin):
    list_display = ("id", "hospital", "rule", "reason", "until", "state", "created_at", "created_by", "lifted", "operations")
    list_filter = (RestrictionStateFilter, "rule", ("hospital", admin.RelatedOnlyFieldListFilter))
    search_fields = ("reason", "created_by", "lifted_by")
    ordering = ("-created_at",)
    actions = None

    def get_form(self, request: HttpRequest, obj: Restriction | None = None, **kwargs: Any):
        if obj is None:
            kwargs["form"] = RestrictionForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Restriction | None = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        return (
            "hospital", "rule", "reason", "until", "created_at", "created_by", "ended_at", "lifted_at", "lifted_by", "lift_reason",
        )

    def get_fields(self, request: HttpRequest, obj: Restriction | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("hospital", "id_type", "id_number", "reason", "until")
        return self.get_readonly_fields(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Restriction | None = None) -> bool:
        return False  # a ban is never edited: lift it (with a reason) and add another

    def has_delete_permission(self, request: HttpRequest, obj: Restriction | None = None) -> bool:
        return False  # lift instead: the history of bans is kept

    @admin.display(description="状态")
    def state(self, obj: Restriction) -> str:
        if obj.lifted_at is not None:
            return "已解除"
        return "生效中" if obj.until >= clock.today() and obj.ended_at is None else "已到期"

    @admin.display(description="解除", ordering="lifted_at")
    def lifted(self, obj: Restriction) -> str:
        if obj.lifted_at is None:
            return "—"
        return f"{clock.local(obj.lifted_at):%Y-%m-%d %H:%M} {obj.lifted_by}：{obj.lift_reason}"

    @admin.display(description="操作")
    def operations(self, obj: Restriction) -> str:
        if obj.lifted_at is not None or obj.ended_at is not None or obj.until < clock.today():
            return ""
        return format_html('<a href="{}">解除</a>', reverse("admin:policies_restriction_lift", args=[obj.pk]))

    def save_model(self, request: HttpRequest, obj: Restriction, form: forms.ModelForm, change: bool) -> None:
        if change:
            return
        data = form.cleaned_data
        # The form has checked the document, the reason and the date: the service's own checks hold.
        with transaction.atomic():
            created = services.restrict_patient(
                hospital=data["hospital"],
                id_type=data["id_type"],
                id_number=data["id_number"],
                reason=data["reason"],
                until=data["until"],
                created_by=request.user.get_username(),
            )
            record_audit(
                request=request,
                action=AuditEntry.Action.BAN,
                obj=created,
                hospital=data["hospital"],
                after={"reason": created.reason, "until": created.until.isoformat()},
                detail=f"限制预约至 {created.until:%Y-%m-%d}：{created.reason}",
            )
        obj.pk = created.pk
        obj.created_at = created.created_at
        obj.created_by = created.created_by

    # --- lift with a reason ---------------------------------------------------------------

    def get_urls(self) -> list:
        own = [path("<path:object_id>/lift/", self.admin_site.admin_view(self.lift_view), name="policies_restriction_lift")]
        return own + super().get_urls()

    def lift_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not request.user.has_perm(LIFT_PERM):
            raise PermissionDenied
        restriction = self.get_queryset(request).select_related("hospital").filter(pk=object_id).first() if object_id.isdigit() else None
        if restriction is None:
            raise Http404("限制不存在")
        back = HttpResponseRedirect(reverse("admin:policies_restriction_changelist"))
        if restriction.lifted_at is not None:
            self.message_user(request, "该限制已解除", level=messages.WARNING)
            return back
        form = LiftForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                with transaction.atomic():
                    lifted = services.lift_restriction_by_staff(
                        restriction_id=restriction.pk,
                        staff_username=request.user.get_username(),
                        reason=form.cleaned_data["reason"],
                    )
                    record_audit(
                        request=request,
                        action=AuditEntry.Action.LIFT_BAN,
                        obj=lifted,
                        hospital=restriction.hospital,
                        before={"lifted_at": None},
                        after={"lifted_at": lifted.lifted_at.isoformat(), "lift_reason": lifted.lift_reason},
                        detail=f"解除原因：{lifted.lift_reason}",
                    )
            except GuahaoError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(request, f"已解除限制：{lifted}", level=messages.SUCCESS)
                return back
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "解除预约限制",
            "original": restriction,
            "form": form,
        }
        return TemplateResponse(request, "admin/policies/restriction/lift.html", context)


@admin.register(Policy)
class PolicyAdmin(ConsoleModelAdmin):
    """One 爽约与退号规则 per hospital, made with the defaults the first time the list is opened;
    edited by the system administrator (audited by the base class), read by the security one. The
    per-account hold caps stay with the release rules (放号规则), which departments can override."""

    list_display = (
        "hospital",
        "no_show_limit",
        "no_show_window_days",
        "no_show_ban_days",
        "no_show_grace_minutes",
        "cancel_limit",
        "cancel_window_days",
        "cancel_ban_days",
        "max_per_day",
        "max_per_department_per_day",
    )
    list_select_related = ("hospital",)
    fieldsets = (
        (None, {"fields": ("hospital",)}),
        ("爽约", {"fields": ("no_show_limit", "no_show_window_days", "no_show_ban_days", "no_show_grace_minutes")}),
        ("退号", {"fields": ("cancel_limit", "cancel_window_days", "cancel_ban_days")}),
        ("每位就诊人每日挂号数（按证件，跨账号）", {"fields": ("max_per_day", "max_per_department_per_day")}),
    )
    readonly_fields = ("hospital",)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        ids = hospital_ids_of(request.user)
        services.ensure_policies(hospital_ids=None if ids is None else sorted(ids))
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # one per hospital, made with the defaults

    def has_delete_permission(self, request: HttpRequest, obj: Policy | None = None) -> bool:
        return False
