"""The operator console for schedules: registration types, release rules, weekly templates,
sessions (按模板生成一周排班, 停诊 with a reason and its undo, 加号) and their slots. Pages here
parse, authorise and render; every write is a service call, audited in the same transaction."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html_join

from guahao import clock
from guahao.booking.services.suspend import resume_session
from guahao.catalog.models import Hospital
from guahao.console.display import yuan
from guahao.console.filters import SessionDayFilter
from guahao.console.modeladmin import ConsoleModelAdmin
from guahao.console.models import AuditEntry
from guahao.console.selectors import hospital_ids_of
from guahao.console.services import record_audit
from guahao.errors import GuahaoError
from guahao.scheduling import selectors, services
from guahao.scheduling.models import RegistrationType, ReleaseRule, Session, Slot, WeeklyTemplate

SUSPEND_PERM = "scheduling.suspend_session"
ADD_SLOT_PERM = "scheduling.add_extra_slot"


def _same_hospital(form: forms.ModelForm, cleaned: dict[str, Any], *names: str) -> None:
    """Every chosen related row (department, doctor, registration type) belongs to the chosen hospital."""
    hospital = cleaned.get("hospital")
    if hospital is None:
        return
    for name in names:
        value = cleaned.get(name)
        if value is not None and value.hospital_id != hospital.id:
            form.add_error(name, f"须属于{hospital.name}")


class RegistrationTypeForm(forms.ModelForm):
    """The default fee is typed in 元 (two decimals) and stored in fen."""

    default_fee_yuan = forms.DecimalField(
        label="默认挂号费（元）", min_value=Decimal("0"), max_digits=8, decimal_places=2
    )

    class Meta:
        model = RegistrationType
        fields = ("hospital", "code", "name")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["default_fee_yuan"] = (Decimal(self.instance.default_fee_fen) / 100).quantize(Decimal("0.01"))

    def save(self, commit: bool = True) -> RegistrationType:
        self.instance.default_fee_fen = int(self.cleaned_data["default_fee_yuan"] * 100)
        return super().save(commit)


@admin.register(RegistrationType)
class RegistrationTypeAdmin(ConsoleModelAdmin):
    form = RegistrationTypeForm
    fields = ("hospital", "code", "name", "default_fee_yuan")
    list_display = ("name", "code", "hospital", "default_fee")
    list_filter = (("hospital", admin.RelatedOnlyFieldListFilter),)

    @admin.display(description="默认挂号费", ordering="default_fee_fen")
    def default_fee(self, obj: RegistrationType) -> str:
        return yuan(obj.default_fee_fen)


# --- release rules ------------------------------------------------------------------------------


class ReleaseRuleForm(forms.ModelForm):
    class Meta:
        model = ReleaseRule
        fields = (
            "hospital",
            "department",
            "release_time",
            "window_days",
            "book_before_minutes",
            "offline_percent",
            "lock_minutes",
            "cancel_deadline_hours",
            "register_cutoff_minutes",
            "max_live_holds_per_account",
            "max_holds_per_day_per_account",
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        _same_hospital(self, cleaned, "department")
        return cleaned


@admin.register(ReleaseRule)
class ReleaseRuleAdmin(ConsoleModelAdmin):
    """Release time, booking window, lock duration, cancel deadline, per-account caps and the
    offline share. Changes apply to the next hold (rules are read afresh on every booking)."""

    form = ReleaseRuleForm
    list_display = (
        "__str__",
        "hospital",
        "release_time",
        "window_days",
        "lock_minutes",
        "cancel_deadline_hours",
        "book_before_minutes",
        "max_live_holds_per_account",
        "max_holds_per_day_per_account",
        "offline_share",
    )
    list_filter = (("hospital", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("hospital", "department")
    autocomplete_fields = ("department",)
    fieldsets = (
        ("适用范围", {"fields": ("hospital", "department")}),
        ("放号", {"fields": ("release_time", "window_days", "book_before_minutes", "offline_percent")}),
        ("锁号与退号", {"fields": ("lock_minutes", "cancel_deadline_hours", "register_cutoff_minutes")}),
        ("每账号限制", {"fields": ("max_live_holds_per_account", "max_holds_per_day_per_account")}),
    )

    @admin.display(description="线下预留", ordering="offline_percent")
    def offline_share(self, obj: ReleaseRule) -> str:
        return f"{obj.offline_percent}%"


# --- weekly templates ---------------------------------------------------------------------------


class WeeklyTemplateForm(forms.ModelForm):
    """The fee is typed in 元 (two decimals) and stored in fen."""

    fee_yuan = forms.DecimalField(
        label="挂号费（元）",
        required=False,
        min_value=Decimal("0"),
        max_digits=8,
        decimal_places=2,
        help_text="留空则用号别的默认挂号费",
    )

    class Meta:
        model = WeeklyTemplate
        fields = (
            "hospital",
            "department",
            "doctor",
            "registration_type",
            "weekday",
            "period",
            "start",
            "end",
            "capacity",
            "window_minutes",
            "location",
            "is_active",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.fee_fen is not None:
            self.initial["fee_yuan"] = (Decimal(self.instance.fee_fen) / 100).quantize(Decimal("0.01"))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        _same_hospital(self, cleaned, "department", "doctor", "registration_type")
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end and end <= start:
            self.add_error("end", "结束时间须晚于开始时间")
        minutes = cleaned.get("window_minutes")
        if minutes is not None and not 1 <= minutes <= services.MAX_WINDOW_MINUTES:
            self.add_error("window_minutes", f"分时段时长须为 1–{services.MAX_WINDOW_MINUTES} 分钟")
        if cleaned.get("capacity") == 0:
            self.add_error("capacity", "号源数须至少为 1")
        return cleaned

    def save(self, commit: bool = True) -> WeeklyTemplate:
        fee = self.cleaned_data.get("fee_yuan")
        self.instance.fee_fen = None if fee is None else int(fee * 100)
        return super().save(commit)


@admin.register(WeeklyTemplate)
class WeeklyTemplateAdmin(ConsoleModelAdmin):
    form = WeeklyTemplateForm
    list_display = ("department", "doctor", "weekday", "period", "start", "end", "capacity", "fee", "registration_type", "is_active")
    list_filter = (
        "weekday",
        "period",
        "is_active",
        ("department", admin.RelatedOnlyFieldListFilter),
        ("hospital", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("department", "doctor", "registration_type")
    search_fields = ("department__name", "doctor__name")
    ordering = ("department__sort_order", "weekday", "start")
    fields = (
        "hospital",
        "department",
        "doctor",
        "registration_type",
        "weekday",
        "period",
        "start",
        "end",
        "capacity",
        "window_minutes",
        "fee_yuan",
        "location",
        "is_active",
    )

    @admin.display(description="挂号费", ordering="fee_fen")
    def fee(self, obj: WeeklyTemplate) -> str:
        return yuan(obj.fee_fen) if obj.fee_fen is not None else f"号别默认（{yuan(obj.registration_type.default_fee_fen)}）"


# --- sessions -----------------------------------------------------------------------------------


class ReasonForm(forms.Form):
    reason = forms.CharField(label="停诊原因", max_length=100, help_text="将告知已预约的患者，例如：医生外出会诊")


class AddSlotsForm(forms.Form):
    count = forms.IntegerField(label="加号数量", min_value=1, max_value=services.MAX_EXTRA_SLOTS, initial=1)


class WeekForm(forms.Form):
    hospital = forms.ModelChoiceField(label="医院", queryset=Hospital.objects.none())
    week_start = forms.DateField(
        label="周一日期", widget=forms.DateInput(attrs={"type": "date"}), help_text="生成这一周（周一至周日）的排班"
    )

    def __init__(self, *args: Any, hospitals: QuerySet[Hospital], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["hospital"].queryset = hospitals
        if hospitals.count() == 1:
            self.fields["hospital"].initial = hospitals.first()

    def clean_week_start(self) -> dt.date:
        value = self.cleaned_data["week_start"]
        if value.weekday() != 0:
            raise forms.ValidationError("请选择星期一")
        return value


class SlotInline(admin.TabularInline):
    model = Slot
    extra = 0
    can_delete = False
    fields = ("seq", "window_start", "window_end", "state", "held_until", "his_code", "added_by", "added_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Session | None = None) -> bool:
        return False


@admin.register(Session)
class SessionAdmin(ConsoleModelAdmin):
    """Sessions come from the HIS, the weekly templates (按模板生成一周排班) or
    `scheduling.services.create_session` (which makes the slots), so the console has no plain add
    form. 停诊 asks for a reason; 恢复出诊 and 加号 are pages of their own."""

    list_display = (
        "date",
        "period",
        "department",
        "doctor",
        "registration_type",
        "fee",
        "slot_counts",
        "offline_count",
        "status",
        "suspend_reason",
        "operations",
    )
    list_filter = (
        SessionDayFilter,
        "status",
        "period",
        ("department", admin.RelatedOnlyFieldListFilter),
        ("doctor", admin.RelatedOnlyFieldListFilter),
        ("registration_type", admin.RelatedOnlyFieldListFilter),
        ("hospital", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("department", "doctor", "registration_type")
    search_fields = ("doctor__name", "department__name", "his_code")
    date_hierarchy = "date"
    ordering = ("date", "starts_at", "department__sort_order")
    readonly_fields = (
        "hospital",
        "department",
        "doctor",
        "registration_type",
        "his_code",
        "date",
        "period",
        "starts_at",
        "ends_at",
        "fee",
        "capacity",
        "status",
        "suspend_reason",
        "suspended_at",
        "location",
    )
    fields = readonly_fields
    inlines = [SlotInline]
    actions = ["suspend"]
    change_list_template = "admin/scheduling/session/change_list.html"
    change_form_template = "admin/scheduling/session/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Session]:
        return selectors.with_slot_counts(super().get_queryset(request), now=clock.now())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Session | None = None) -> bool:
        return False  # bookings point at it; 停诊 instead

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        if not request.user.has_perm(SUSPEND_PERM):
            actions.pop("suspend", None)
        return actions

    @admin.display(description="挂号费", ordering="fee_fen")
    def fee(self, obj: Session) -> str:
        return yuan(obj.fee_fen)

    @admin.display(description="剩余/号源", ordering="free")
    def slot_counts(self, obj: Session) -> str:
        return f"{obj.free}/{obj.total}"

    @admin.display(description="线下预留", ordering="offline")
    def offline_count(self, obj: Session) -> int:
        return obj.offline

    @admin.display(description="操作")
    def operations(self, obj: Session) -> str:
        links = []
        if obj.status == Session.Status.OPEN:
            links.append((reverse("admin:scheduling_session_suspend", args=[obj.pk]), "停诊"))
            links.append((reverse("admin:scheduling_session_add_slots", args=[obj.pk]), "加号"))
        else:
            links.append((reverse("admin:scheduling_session_resume", args=[obj.pk]), "恢复出诊"))
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    # --- pages of their own ---------------------------------------------------------------

    def get_urls(self) -> list:
        own = [
            path("generate-week/", self.admin_site.admin_view(self.generate_week_view), name="scheduling_session_generate_week"),
            path("<path:object_id>/suspend/", self.admin_site.admin_view(self.suspend_view), name="scheduling_session_suspend"),
            path("<path:object_id>/resume/", self.admin_site.admin_view(self.resume_view), name="scheduling_session_resume"),
            path("<path:object_id>/add-slots/", self.admin_site.admin_view(self.add_slots_view), name="scheduling_session_add_slots"),
        ]
        return own + super().get_urls()

    def _session_or_404(self, request: HttpRequest, object_id: str) -> Session:
        """Only a session of the staff member's hospitals: another hospital's id is not found."""
        session = self.get_queryset(request).select_related("hospital").filter(pk=object_id).first() if object_id.isdigit() else None
        if session is None:
            raise Http404("排班不存在")
        return session

    def _require(self, request: HttpRequest, perm: str) -> None:
        if not request.user.has_perm(perm):
            raise PermissionDenied

    def _page(self, request: HttpRequest, template: str, title: str, **context: Any) -> TemplateResponse:
        return TemplateResponse(
            request,
            template,
            {**self.admin_site.each_context(request), "opts": self.model._meta, "title": title, **context},
        )

    def _back(self, session: Session) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:scheduling_session_change", args=[session.pk]))

    def suspend_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, SUSPEND_PERM)
        session = self._session_or_404(request, object_id)
        if session.status != Session.Status.OPEN:
            self.message_user(request, "该排班已停诊", level=messages.WARNING)
            return self._back(session)
        form = ReasonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            count = self._suspend(request, [session], form.cleaned_data["reason"])
            if count:
                self.message_user(request, f"已停诊：{session}。已预约的患者将收到通知并自动退号退费", level=messages.SUCCESS)
            return self._back(session)
        return self._page(
            request, "admin/scheduling/session/suspend.html", "停诊", form=form, sessions=[session], original=session
        )

    def _suspend(self, request: HttpRequest, sessions: list[Session], reason: str) -> int:
        count = 0
        for session in sessions:
            try:
                with transaction.atomic():
                    before = {"status": session.status}
                    updated = services.suspend_session(session=session, reason=reason)
                    if updated.status == Session.Status.SUSPENDED and before["status"] == Session.Status.OPEN:
                        record_audit(
                            request=request,
                            action=AuditEntry.Action.SUSPEND,
                            obj=updated,
                            hospital=session.hospital,
                            before=before,
                            after={"status": updated.status, "suspend_reason": updated.suspend_reason},
                            detail=f"停诊原因：{updated.suspend_reason}",
                        )
                        count += 1
            except GuahaoError as exc:
                self.message_user(request, f"{session}：{exc.message}", level=messages.ERROR)
        return count

    @admin.action(description="停诊（填写原因；停止预约，已预约患者自动退号退费并收到通知）")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Session]) -> HttpResponse | None:
        self._require(request, SUSPEND_PERM)
        sessions = list(queryset.filter(status=Session.Status.OPEN).select_related("hospital", "department", "doctor"))
        form = ReasonForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            count = self._suspend(request, sessions, form.cleaned_data["reason"])
            self.message_user(request, f"已停诊 {count} 个排班", level=messages.SUCCESS)
            return None
        if not sessions:
            self.message_user(request, "所选排班均已停诊", level=messages.WARNING)
            return None
        return self._page(
            request,
            "admin/scheduling/session/suspend.html",
            "停诊",
            form=form,
            sessions=sessions,
            selected=[s.pk for s in sessions],
            action_checkbox_name=admin.helpers.ACTION_CHECKBOX_NAME,
        )

    def resume_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, SUSPEND_PERM)
        session = self._session_or_404(request, object_id)
        if request.method == "POST":
            try:
                with transaction.atomic():
                    resumed = resume_session(session_id=session.pk)
                    record_audit(
                        request=request,
                        action=AuditEntry.Action.RESUME,
                        obj=resumed,
                        hospital=session.hospital,
                        before={"status": session.status, "suspend_reason": session.suspend_reason},
                        after={"status": resumed.status},
                    )
            except GuahaoError as exc:
                self.message_user(request, f"不能恢复出诊：{exc.message}", level=messages.ERROR)
            else:
                self.message_user(request, f"已恢复出诊：{resumed}", level=messages.SUCCESS)
            return self._back(session)
        return self._page(request, "admin/scheduling/session/resume.html", "恢复出诊", original=session)

    def add_slots_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, ADD_SLOT_PERM)
        session = self._session_or_404(request, object_id)
        form = AddSlotsForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            count = form.cleaned_data["count"]
            try:
                with transaction.atomic():
                    slots = services.add_slots(
                        session=session, count=count, staff_username=request.user.get_username(), now=clock.now()
                    )
                    record_audit(
                        request=request,
                        action=AuditEntry.Action.ADD_SLOT,
                        obj=session,
                        hospital=session.hospital,
                        before={"capacity": session.capacity - count},
                        after={"capacity": session.capacity, "seq": [s.seq for s in slots]},
                        detail=f"加号 {count} 个（第 {slots[0].seq}–{slots[-1].seq} 号）",
                    )
            except GuahaoError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(request, f"已加号 {count} 个，患者现在即可预约", level=messages.SUCCESS)
                return self._back(session)
        return self._page(request, "admin/scheduling/session/add_slots.html", "加号", form=form, original=session)

    def generate_week_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request, "scheduling.add_session")
        ids = hospital_ids_of(request.user)
        hospitals = Hospital.objects.filter(is_active=True).order_by("id")
        if ids is not None:
            hospitals = hospitals.filter(id__in=ids)
        today = clock.today()
        next_monday = today + dt.timedelta(days=7 - today.weekday())
        form = WeekForm(request.POST or None, hospitals=hospitals, initial={"week_start": next_monday})
        result = None
        if request.method == "POST" and form.is_valid():
            hospital, week_start = form.cleaned_data["hospital"], form.cleaned_data["week_start"]
            try:
                with transaction.atomic():
                    result = services.create_week_from_templates(
                        hospital=hospital, week_start=week_start, staff_username=request.user.get_username()
                    )
                    record_audit(
                        request=request,
                        action=AuditEntry.Action.ADD,
                        hospital=hospital,
                        after={"week_start": week_start.isoformat(), "sessions": [s.pk for s in result.created]},
                        detail=f"按模板生成 {week_start:%Y-%m-%d} 起一周排班：新建 {len(result.created)} 个，跳过 {len(result.skipped)} 个",
                    )
            except GuahaoError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(
                    request,
                    f"已新建 {len(result.created)} 个排班，跳过 {len(result.skipped)} 个",
                    level=messages.SUCCESS,
                )
        return self._page(request, "admin/scheduling/session/generate_week.html", "按模板生成一周排班", form=form, result=result)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        extra = {"can_generate_week": request.user.has_perm("scheduling.add_session"), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        extra = {
            "can_suspend": request.user.has_perm(SUSPEND_PERM),
            "can_add_slots": request.user.has_perm(ADD_SLOT_PERM),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra)


@admin.register(Slot)
class SlotAdmin(ConsoleModelAdmin):
    """Read-only: a slot changes only through holds, registrations and 加号."""

    hospital_field = "session__hospital"
    list_display = ("session", "seq", "window_start", "window_end", "state", "held_until", "his_code", "added_by")
    list_filter = ("state", ("session__date", admin.DateFieldListFilter))
    list_select_related = ("session__department", "session__doctor")
    search_fields = ("session__doctor__name", "session__department__name", "his_code")
    readonly_fields = ("session", "seq", "window_start", "window_end", "state", "held_until", "his_code", "added_by", "added_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Slot | None = None) -> bool:
        return False

