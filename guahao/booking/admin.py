"""Holds and registrations in the console: find any of them by registration number, phone, name or ID
number (through the blind indexes, masked on every page), filter by visit day, department and
doctor; on a registration, staff with the permission reveal the patient's identity once, cancel and
refund for the patient, record attendance, and export the list. Every such act is audited; the
changes themselves go through booking's services."""

from __future__ import annotations

import io
from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse

from guahao import clock, pii
from guahao.booking import selectors
from guahao.booking.models import Hold, Registration
from guahao.booking.services import staff
from guahao.booking.states import REGISTRATION_TRANSITIONS, RegistrationStatus
from guahao.console.display import yuan
from guahao.console.filters import VisitDayFilter
from guahao.console.modeladmin import ReadOnlyConsoleAdmin
from guahao.console.models import AuditEntry
from guahao.console.services import record_audit
from guahao.errors import GuahaoError
from guahao.patients.admin import (
    REVEAL_PERMISSION,
    PersonalTerm,
    audit_personal_search,
    masked_term,
    personal_term,
    reveal_response,
)
from guahao.scheduling.selectors import release_rule_for

CANCEL_PERMISSION = "booking.cancel_on_behalf"
ATTENDANCE_PERMISSION = "booking.mark_attendance"
EXPORT_PERMISSION = "booking.export_registration"

SEARCH_HELP = "按挂号单号，或就诊人完整姓名、完整证件号码、完整手机号（就诊人或账号的）查找"


def _personal_q(found: PersonalTerm, *, patient: str, account: str) -> Q:
    """The rows whose patient (or account, for a phone) matches a personal search term."""
    if found.kind == "id":
        return Q(**{f"{patient}__id_index__in": found.indexes})
    if found.kind == "phone":
        return Q(**{f"{patient}__phone_index__in": found.indexes}) | Q(**{f"{account}__phone_index__in": found.indexes})
    return Q(**{f"{patient}__name_index__in": found.indexes})


def _visit(session) -> str:
    return f"{session.date:%Y-%m-%d} {session.get_period_display()}"


def _local(moment) -> str:
    return f"{clock.local(moment):%Y-%m-%d %H:%M}" if moment else "—"


class CancelForm(forms.Form):
    reason = forms.CharField(
        label="取消原因（将告知患者）",
        max_length=100,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": "请填写取消原因"},
    )


@admin.register(Registration)
class RegistrationAdmin(ReadOnlyConsoleAdmin):
    hospital_field = "session__hospital"
    list_display = (
        "registration_no",
        "masked_patient",
        "masked_phone",
        "department",
        "doctor",
        "visit",
        "slot_seq",
        "status",
        "fee_yuan",
        "booked",
    )
    list_filter = (
        "status",
        VisitDayFilter,
        ("session__department", admin.RelatedOnlyFieldListFilter),
        ("session__doctor", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("=registration_no",)  # shows the search box; the lookup is get_search_results
    search_help_text = SEARCH_HELP
    date_hierarchy = "session__date"
    ordering = ("-booked_at", "-id")
    fields = (
        "registration_no",
        "status",
        "masked_patient",
        "masked_id_number",
        "masked_phone",
        "masked_account_phone",
        "department",
        "doctor",
        "visit",
        "slot_seq",
        "fee_yuan",
        "payment_summary",
        "refund_summary",
        "booked",
        "cancelled",
        "cancel_reason",
        "cancelled_by",
    )
    readonly_fields = fields
    list_select_related = ("patient", "account", "session__department", "session__doctor", "slot")
    change_form_template = "console/orders/registration_change_form.html"
    change_list_template = "console/orders/registration_change_list.html"

    class Media:
        css = {"all": ("console/orders.css",)}

    # --- columns ---------------------------------------------------------------------------------

    @admin.display(description="就诊人")
    def masked_patient(self, obj: Registration) -> str:
        return pii.mask_name(obj.patient.name)

    @admin.display(description="证件号码")
    def masked_id_number(self, obj: Registration) -> str:
        return pii.mask_id_number(obj.patient.id_number)

    @admin.display(description="就诊人手机号")
    def masked_phone(self, obj: Registration) -> str:
        return pii.mask_phone(obj.patient.phone) if obj.patient.phone else "—"

    @admin.display(description="账号手机号")
    def masked_account_phone(self, obj: Registration) -> str:
        return pii.mask_phone(obj.account.phone)

    @admin.display(description="科室", ordering="session__department__name")
    def department(self, obj: Registration) -> str:
        return obj.session.department.name

    @admin.display(description="医生", ordering="session__doctor__name")
    def doctor(self, obj: Registration) -> str:
        return obj.session.doctor.name if obj.session.doctor_id else "—"

    @admin.display(description="就诊日期", ordering="session__date")
    def visit(self, obj: Registration) -> str:
        return _visit(obj.session)

    @admin.display(description="号序")
    def slot_seq(self, obj: Registration) -> int:
        return obj.slot.seq

    @admin.display(description="挂号费", ordering="fee_fen")
    def fee_yuan(self, obj: Registration) -> str:
        return yuan(obj.fee_fen)

    @admin.display(description="预约时间", ordering="booked_at")
    def booked(self, obj: Registration) -> str:
        return _local(obj.booked_at)

    @admin.display(description="取消时间")
    def cancelled(self, obj: Registration) -> str:
        return _local(obj.cancelled_at)

    @admin.display(description="支付")
    def payment_summary(self, obj: Registration) -> str:
        payment = obj.hold.payment
        if payment is None:
            return "—"
        return f"{payment.out_trade_no}（{_channel_label(payment.channel)}，{yuan(payment.amount_fen)}）"

    @admin.display(description="退款")
    def refund_summary(self, obj: Registration) -> str:
        refund = selectors.refund_of(obj)
        if refund is None:
            return "—"
        return f"{refund.state_label}，{yuan(refund.amount_fen)}"

    # --- search ----------------------------------------------------------------------------------

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(registration_no=term)
        if found := personal_term(term):
            audit_personal_search(request, found, page="挂号单列表")
            match |= _personal_q(found, patient="patient", account="account")
        return queryset.filter(match), False

    # --- pages -----------------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("export/", view(self.export_view), name="booking_registration_export"),
            path("<path:object_id>/reveal/", view(self.reveal_view), name="booking_registration_reveal"),
            path("<path:object_id>/cancel/", view(self.cancel_view), name="booking_registration_cancel"),
            path("<path:object_id>/attendance/", view(self.attendance_view), name="booking_registration_attendance"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        extra = {
            **(extra_context or {}),
            "can_export": request.user.has_perm(EXPORT_PERMISSION),
            "export_query": request.GET.urlencode(),
        }
        return super().changelist_view(request, extra)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        obj = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if obj is not None:
            extra.update(
                can_reveal=request.user.has_perm(REVEAL_PERMISSION),
                can_cancel=request.user.has_perm(CANCEL_PERMISSION) and _may_cancel(obj.status),
                attendance_choices=_attendance_choices(obj.status) if request.user.has_perm(ATTENDANCE_PERMISSION) else [],
            )
        return super().change_view(request, object_id, form_url, extra)

    def _registration(self, request: HttpRequest, object_id: str) -> Registration:
        """The registration, if this staff member may see it: another hospital's is "not found"."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, object_id)
        if obj is None:
            raise Http404("挂号单不存在")
        return obj

    def _back(self, obj: Registration) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:booking_registration_change", args=[obj.pk]))

    def _audit_in_transaction(
        self, request: HttpRequest, obj: Registration, action: str, *, before: dict, after: dict, detail: str
    ) -> Callable[[object], None]:
        def write(_changed: object) -> None:
            record_audit(
                request=request, action=action, obj=obj, hospital=obj.session.hospital,
                before=before, after=after, detail=detail,
            )  # fmt: skip

        return write

    def _audit_failure(
        self, request: HttpRequest, obj: Registration, action: str, error: GuahaoError, *, after: dict
    ) -> None:
        record_audit(
            request=request, action=action, obj=obj, hospital=obj.session.hospital,
            before={"status": obj.status}, after=after, result=AuditEntry.Result.FAILURE, detail=error.message,
        )  # fmt: skip

    def reveal_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self._registration(request, object_id)
        return reveal_response(self, request, obj=obj, patient=obj.patient, hospital=obj.session.hospital)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """代患者取消并退费: a confirmation page with the reason, then the cancel (audited in its
        transaction). Staff may cancel after the online deadline; the page says when it was."""
        if not request.user.has_perm(CANCEL_PERMISSION):
            raise PermissionDenied
        obj = self._registration(request, object_id)
        form = CancelForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid() and _may_cancel(obj.status):
            reason = form.cleaned_data["reason"].strip()
            audit = self._audit_in_transaction(
                request, obj, AuditEntry.Action.CANCEL,
                before={"status": obj.status},
                after={"status": RegistrationStatus.REFUNDING.value, "reason": reason},
                detail=f"代患者取消并退费：{reason}",
            )  # fmt: skip
            try:
                done = staff.cancel_registration_by_staff(
                    registration_id=obj.pk, staff_username=request.user.get_username(), reason=reason, record=audit
                )
            except GuahaoError as exc:
                self._audit_failure(request, obj, AuditEntry.Action.CANCEL, exc, after={"reason": reason})
                self.message_user(request, exc.message, messages.ERROR)
                return self._back(obj)
            self.message_user(
                request,
                f"已为患者取消挂号单 {done.registration_no}，挂号费 {yuan(done.fee_fen)} 按原渠道退回"
                f"（当前状态：{done.get_status_display()}）",
                messages.SUCCESS,
            )
            return self._back(obj)
        deadline = selectors.cancel_deadline(obj, hours=release_rule_for(obj.session).cancel_deadline_hours)
        payment = obj.hold.payment
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "代患者取消并退费",
            "object": obj,
            "form": form,
            "masked_patient": pii.mask_name(obj.patient.name),
            "refund_yuan": yuan(payment.amount_fen if payment else 0),
            "deadline": clock.local(deadline),
            "past_deadline": clock.now() >= deadline,
            "can_act": _may_cancel(obj.status),
            "back_url": reverse("admin:booking_registration_change", args=[obj.pk]),
            "media": self.media,
        }
        return TemplateResponse(request, "console/orders/cancel.html", context)

    def attendance_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """标记已取号 / 已就诊 / 爽约 by hand (POST), audited in the move's transaction."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(ATTENDANCE_PERMISSION):
            raise PermissionDenied
        obj = self._registration(request, object_id)
        status = request.POST.get("status", "")
        label = RegistrationStatus(status).label if status in RegistrationStatus.values else status
        audit = self._audit_in_transaction(
            request, obj, AuditEntry.Action.ATTENDANCE,
            before={"status": obj.status}, after={"status": status}, detail=f"标记为{label}",
        )  # fmt: skip
        try:
            done = staff.mark_attendance(registration_id=obj.pk, status=status, record=audit)
        except GuahaoError as exc:
            self._audit_failure(request, obj, AuditEntry.Action.ATTENDANCE, exc, after={"status": status})
            self.message_user(request, exc.message, messages.ERROR)
            return self._back(obj)
        self.message_user(request, f"挂号单 {done.registration_no} 已标记为“{done.get_status_display()}”", messages.SUCCESS)
        return self._back(obj)

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The list as it is filtered and searched now, to Excel: masked values only, money in 元;
        audited with the row count and the filters (a personal search term masked)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(EXPORT_PERMISSION) or not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        rows = list(changelist.get_queryset(request).select_related(*self.list_select_related, "hold__payment"))
        filters = {key: (masked_term(value) if key == "q" else value) for key, value in request.GET.items()}
        record_audit(
            request=request,
            action=AuditEntry.Action.EXPORT,
            detail=f"导出挂号单 {len(rows)} 条",
            after={"rows": len(rows), "filters": filters},
        )
        stamp = f"{clock.local_now():%Y%m%d-%H%M}"
        response = HttpResponse(
            _registrations_xlsx(rows),
            content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
        response["Content-Disposition"] = f'attachment; filename="registrations-{stamp}.xlsx"'
        response["Cache-Control"] = "no-store"
        return response


EXPORT_HEADERS = (
    "挂号单号", "状态", "就诊人", "证件号码", "就诊人手机号", "科室", "医生", "就诊日期", "时段",
    "号序", "挂号费（元）", "支付渠道", "预约时间", "取消时间", "取消原因", "代取消员工",
)  # fmt: skip


def _registrations_xlsx(rows: list[Registration]) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "挂号单"
    sheet.append(EXPORT_HEADERS)
    for reg in rows:
        session = reg.session
        payment = reg.hold.payment
        sheet.append(
            (
                reg.registration_no,
                reg.get_status_display(),
                pii.mask_name(reg.patient.name),
                pii.mask_id_number(reg.patient.id_number),
                pii.mask_phone(reg.patient.phone) if reg.patient.phone else "",
                session.department.name,
                session.doctor.name if session.doctor_id else "",
                f"{session.date:%Y-%m-%d}",
                session.get_period_display(),
                reg.slot.seq,
                reg.fee_fen / 100,
                _channel_label(payment.channel) if payment else "",
                _local(reg.booked_at),
                _local(reg.cancelled_at) if reg.cancelled_at else "",
                reg.cancel_reason,
                reg.cancelled_by,
            )
        )
        sheet.cell(row=sheet.max_row, column=11).number_format = "0.00"
    for column, width in zip("ABCDEFGHIJKLMNOP", (24, 8, 10, 22, 14, 14, 10, 12, 6, 6, 12, 10, 18, 18, 24, 12), strict=True):
        sheet.column_dimensions[column].width = width
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _channel_label(code: str) -> str:
    return Hold.Channel(code).label if code in Hold.Channel.values else (code or "—")


def _may_cancel(status: str) -> bool:
    return RegistrationStatus.REFUNDING in REGISTRATION_TRANSITIONS[RegistrationStatus(status)]


def _attendance_choices(status: str) -> list[tuple[str, str]]:
    allowed = REGISTRATION_TRANSITIONS[RegistrationStatus(status)]
    return [(target.value, target.label) for target in staff.ATTENDANCE_MOVES if target in allowed]


@admin.register(Hold)
class HoldAdmin(ReadOnlyConsoleAdmin):
    hospital_field = "session__hospital"
    list_display = (
        "hold_no",
        "masked_patient",
        "department",
        "visit",
        "slot_seq",
        "state",
        "expires",
        "channel",
        "fee_yuan",
        "created",
    )
    list_filter = (
        "state",
        "channel",
        VisitDayFilter,
        ("session__department", admin.RelatedOnlyFieldListFilter),
        ("session__doctor", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("=id",)  # shows the search box; the lookup is get_search_results
    search_help_text = "按锁号编号、挂号单号，或就诊人完整姓名、完整证件号码、完整手机号（就诊人或账号的）查找"
    date_hierarchy = "session__date"
    fields = (
        "hold_no",
        "state",
        "masked_patient",
        "masked_account_phone",
        "department",
        "doctor",
        "visit",
        "slot_seq",
        "expires",
        "channel",
        "insurance",
        "fee_yuan",
        "registration_link",
        "created",
        "updated",
    )
    readonly_fields = fields
    list_select_related = ("patient", "account", "session__department", "session__doctor", "slot")

    @admin.display(description="锁号编号", ordering="id")
    def hold_no(self, obj: Hold) -> int:
        return obj.id

    @admin.display(description="就诊人")
    def masked_patient(self, obj: Hold) -> str:
        return pii.mask_name(obj.patient.name) if obj.patient_id else "—"

    @admin.display(description="账号手机号")
    def masked_account_phone(self, obj: Hold) -> str:
        return pii.mask_phone(obj.account.phone)

    @admin.display(description="科室", ordering="session__department__name")
    def department(self, obj: Hold) -> str:
        return obj.session.department.name

    @admin.display(description="医生")
    def doctor(self, obj: Hold) -> str:
        return obj.session.doctor.name if obj.session.doctor_id else "—"

    @admin.display(description="就诊日期", ordering="session__date")
    def visit(self, obj: Hold) -> str:
        return _visit(obj.session)

    @admin.display(description="号序")
    def slot_seq(self, obj: Hold) -> int:
        return obj.slot.seq

    @admin.display(description="锁号截止", ordering="expires_at")
    def expires(self, obj: Hold) -> str:
        return _local(obj.expires_at)

    @admin.display(description="挂号费", ordering="fee_fen")
    def fee_yuan(self, obj: Hold) -> str:
        return yuan(obj.fee_fen)

    @admin.display(description="创建时间", ordering="created_at")
    def created(self, obj: Hold) -> str:
        return _local(obj.created_at)

    @admin.display(description="更新时间")
    def updated(self, obj: Hold) -> str:
        return _local(obj.updated_at)

    @admin.display(description="挂号单")
    def registration_link(self, obj: Hold) -> str:
        reg = Registration.objects.filter(hold=obj).only("registration_no").first()
        return reg.registration_no if reg else "—"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(registration__registration_no=term)
        if term.isdigit() and len(term) < 12:
            match |= Q(id=int(term))
        if found := personal_term(term):
            audit_personal_search(request, found, page="锁号列表")
            match |= _personal_q(found, patient="patient", account="account")
        return queryset.filter(match), False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Hold]:
        return super().get_queryset(request).order_by("-id")
