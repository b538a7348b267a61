"""The console's view of accounts and visiting patients. Phones and ID numbers appear masked only:
the encrypted columns are never form fields, and search goes through the blind indexes."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Model, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.urls import path, reverse

from guahao import clock, pii
from guahao.console.modeladmin import ConsoleModelAdmin
from guahao.console.models import AuditEntry
from guahao.console.services import record_audit
from guahao.errors import InvalidInput
from guahao.patients import services
from guahao.patients.idcard import age_on, normalize_id_number, validate_name, validate_phone
from guahao.patients.models import Account, Patient, PatientAddAttempt, PatientCard


def _phone_index_of(term: str) -> list[str] | None:
    # Every index key (current first): rows keep a retired key's digest until rotate-keys.
    try:
        return pii.blind_indexes(validate_phone(term), purpose="phone")
    except InvalidInput:
        return None


@admin.register(Account)
class AccountAdmin(ConsoleModelAdmin):
    # Accounts and patients belong to no hospital: staff see those that booked with theirs.
    hospital_field = "holds__session__hospital"
    hospital_many = True
    list_display = ("id", "masked_phone", "wechat_bound", "is_active", "created_at")
    list_filter = ("is_active",)
    fields = ("masked_phone", "wechat_bound", "is_active", "created_at")
    readonly_fields = ("masked_phone", "wechat_bound", "created_at")
    search_fields = ("=id",)
    search_help_text = "按完整手机号或账号ID查找"
    ordering = ("-id",)
    actions = ("end_all_tokens",)

    @admin.display(description="手机号")
    def masked_phone(self, obj: Account) -> str:
        return pii.mask_phone(obj.phone)

    @admin.action(description="结束所选账号的全部登录（所有设备需重新登录）")
    def end_all_tokens(self, request: HttpRequest, queryset: QuerySet) -> None:
        ended = sum(services.end_all_tokens(account=account) for account in queryset)
        self.message_user(request, f"已结束 {queryset.count()} 个账号的 {ended} 个登录")

    @admin.display(description="已绑定微信", boolean=True)
    def wechat_bound(self, obj: Account) -> bool:
        from guahao.wechat.selectors import is_bound

        return is_bound(obj.pk)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        if not search_term.strip():
            return queryset, False  # no search: the whole list (and what an action selected)
        index = _phone_index_of(search_term)
        if index:
            return queryset.filter(phone_index__in=index), False
        if not search_term.strip().isdigit():
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # accounts are made by SMS sign-in

    def has_delete_permission(self, request: HttpRequest, obj: Account | None = None) -> bool:
        return False  # orders refer to accounts: disable instead


class PatientCardInline(admin.TabularInline):
    model = PatientCard
    extra = 0
    fields = ("hospital", "card_no")


class RemovedFilter(admin.SimpleListFilter):
    title = "状态"
    parameter_name = "removed"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("no", "在列表中"), ("yes", "已移除")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("no", "yes"):
            return queryset.filter(removed_at__isnull=self.value() == "no")
        return queryset


def _id_indexes_of(term: str) -> list[str]:
    """The blind indexes a full ID number has under each document type (the operator may not know
    which document the patient used)."""
    number = normalize_id_number(term)
    if len(number) != 18:
        return []
    return [d for t in Patient.IdType.values for d in pii.blind_indexes(f"{t}:{number}", purpose="id")]


def _name_index_of(term: str) -> list[str] | None:
    try:
        return pii.blind_indexes(validate_name(term), purpose="name")
    except InvalidInput:
        return None


# --- what the console shares for personal data: search by blind index, and 显示完整信息 ------------


@dataclass(frozen=True)
class PersonalTerm:
    """A search term recognised as a full ID number, phone or name, by its blind indexes."""

    kind: str  # "id", "phone" or "name"
    label: str
    indexes: tuple[str, ...]
    masked: str


def _looks_like_id_number(term: str) -> bool:
    # 17 digits and a check character: an order number of 18 characters is not an ID number.
    return re.fullmatch(r"\d{17}[\dX]", normalize_id_number(term)) is not None


def personal_term(term: str) -> PersonalTerm | None:
    """What a console search term is: a full ID number (its index under every document type),
    a full phone, a full name, or none of them."""
    term = term.strip()
    if not term:
        return None
    if _looks_like_id_number(term) and (ids := _id_indexes_of(term)):
        return PersonalTerm("id", "证件号码", tuple(ids), pii.mask_id_number(normalize_id_number(term)))
    if phone := _phone_index_of(term):
        return PersonalTerm("phone", "手机号", tuple(phone), pii.mask_phone(term))
    if name := _name_index_of(term):
        return PersonalTerm("name", "姓名", tuple(name), pii.mask_name(term))
    return None


def masked_term(term: str) -> str:
    """A search term as the audit log may keep it: masked when it is personal data."""
    found = personal_term(term)
    return found.masked if found is not None else term.strip()[:40]


def audit_personal_search(request: HttpRequest, found: PersonalTerm, *, page: str) -> None:
    """A search by a full ID number or phone is audited (kind and masked term, never the term in
    clear), once per request however many times the list runs its search."""
    if found.kind not in ("id", "phone") or getattr(request, "_personal_search_audited", False):
        return
    request._personal_search_audited = True  # type: ignore[attr-defined]
    record_audit(
        request=request,
        action=AuditEntry.Action.SEARCH_PII,
        detail=f"在{page}按完整{found.label}查找：{found.masked}",
        after={"kind": found.kind, "term": found.masked},
    )


REVEAL_PERMISSION = "patients.reveal_personal_data"


def reveal_response(
    model_admin: admin.ModelAdmin, request: HttpRequest, *, obj: Model, patient: Patient, hospital=None
) -> HttpResponse:
    """显示完整信息: POST only; with the permission, the patient's full name, phone and ID number
    on this one response (never cached) and a REVEAL row in the audit log; without it, 403 and a
    row saying it was refused."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not request.user.has_perm(REVEAL_PERMISSION):
        record_audit(
            request=request, action=AuditEntry.Action.REVEAL, obj=obj, hospital=hospital,
            result=AuditEntry.Result.DENIED, detail="无查看完整个人信息权限",
        )  # fmt: skip
        raise PermissionDenied
    record_audit(
        request=request, action=AuditEntry.Action.REVEAL, obj=obj, hospital=hospital,
        detail=f"查看就诊人 {pii.mask_name(patient.name)} 的完整姓名、手机号、证件号码",
    )  # fmt: skip
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": "完整个人信息",
        "subtitle": str(obj),
        "object": obj,
        "patient": patient,
        "back_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]),
    }
    response = TemplateResponse(request, "console/orders/reveal.html", context)
    response["Cache-Control"] = "no-store"
    return response


@admin.register(Patient)
class PatientAdmin(ConsoleModelAdmin):
    hospital_field = "holds__session__hospital"
    hospital_many = True
    """Each account's own visiting-patient records. Age, never the birth date; masked name, phone
    and ID number; the same real person under several accounts shows as several records."""

    list_display = (
        "id",
        "masked_name",
        "id_type",
        "masked_id_number",
        "sex",
        "age",
        "masked_phone",
        "account",
        "relation",
        "verified_at",
        "removed_at",
    )
    list_filter = (RemovedFilter, "relation", "id_type", "sex")
    fields = (
        "account",
        "relation",
        "masked_name",
        "id_type",
        "masked_id_number",
        "sex",
        "age",
        "masked_phone",
        "verified_at",
        "created_at",
        "removed_at",
    )
    readonly_fields = fields
    list_select_related = ("account",)
    search_fields = ("name_index",)  # shows the search box; the lookup is get_search_results
    search_help_text = "按完整姓名、完整证件号码或完整手机号（就诊人或账号的）查找"
    ordering = ("-id",)
    inlines = (PatientCardInline,)
    change_form_template = "console/orders/patient_change_form.html"

    class Media:
        css = {"all": ("console/orders.css",)}

    def get_urls(self):
        urls = [
            path(
                "<path:object_id>/reveal/",
                self.admin_site.admin_view(self.reveal_view),
                name="patients_patient_reveal",
            )
        ]
        return urls + super().get_urls()

    def reveal_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        patient = self.get_object(request, object_id)  # another hospital's patient: not found
        if patient is None:
            raise Http404("就诊人不存在")
        return reveal_response(self, request, obj=patient, patient=patient)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        extra = {
            **(extra_context or {}),
            "can_reveal": request.user.has_perm(REVEAL_PERMISSION),
            "registrations_url": f"{reverse('admin:booking_registration_changelist')}?patient__id__exact={object_id}",
        }
        return super().change_view(request, object_id, form_url, extra)

    @admin.display(description="姓名")
    def masked_name(self, obj: Patient) -> str:
        return pii.mask_name(obj.name)

    @admin.display(description="证件号码")
    def masked_id_number(self, obj: Patient) -> str:
        return pii.mask_id_number(obj.id_number)

    @admin.display(description="手机号")
    def masked_phone(self, obj: Patient) -> str:
        return pii.mask_phone(obj.phone)

    @admin.display(description="年龄")
    def age(self, obj: Patient) -> int:
        return age_on(obj.birth_date, clock.today())

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        found = personal_term(search_term)
        if found is None:
            return (queryset.none() if search_term.strip() else queryset), False
        audit_personal_search(request, found, page="就诊人列表")
        if found.kind == "id":
            return queryset.filter(id_index__in=found.indexes), False
        if found.kind == "phone":
            phones = found.indexes
            return queryset.filter(Q(phone_index__in=phones) | Q(account__phone_index__in=phones)), False
        return queryset.filter(name_index__in=found.indexes), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # patients are added by their accounts, through real-name verification

    def has_change_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False  # a verified identity is not edited by hand

    def has_delete_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False  # registrations refer to the patient


@admin.register(PatientAddAttempt)
class PatientAddAttemptAdmin(ConsoleModelAdmin):
    hospital_field = None  # platform-wide abuse signal; shows no personal value
    """Every try to add a visiting patient: who tried, from where, and how it ended. Many refusals
    from one account or address are someone trying names or ID numbers."""

    list_display = ("id", "created_at", "account", "client_ip", "outcome", "patient")
    list_filter = ("outcome", "created_at")
    fields = ("created_at", "account", "client_ip", "outcome", "patient")
    readonly_fields = fields
    list_select_related = ("account", "patient")
    search_fields = ("=client_ip",)
    search_help_text = "按完整手机号（账号）、完整证件号码、IP 地址或账号ID查找"
    date_hierarchy = "created_at"
    ordering = ("-id",)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        if ids := _id_indexes_of(term):
            return queryset.filter(id_index__in=ids), False
        if phone := _phone_index_of(term):
            return queryset.filter(account__phone_index__in=phone), False
        if term.isdigit():
            return queryset.filter(account_id=int(term)), False
        try:
            ipaddress.ip_address(term)
        except ValueError:
            return queryset.none(), False
        return queryset.filter(client_ip=term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: PatientAddAttempt | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: PatientAddAttempt | None = None
    ) -> bool:
        return False  # the record of who tried what is kept


@admin.register(PatientCard)
class PatientCardAdmin(ConsoleModelAdmin):
    list_display = ("id", "patient", "hospital", "card_no")
    list_filter = ("hospital",)
    raw_id_fields = ("patient",)
    search_fields = ("card_no",)
    list_select_related = ("patient", "hospital")
    ordering = ("-id",)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        return (queryset.filter(Q(card_no=term)) if term else queryset), False
