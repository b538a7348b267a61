"""The console's view of accounts and visiting patients. Phones and ID numbers appear masked only:
the encrypted columns are never form fields, and search goes through the blind indexes."""

from __future__ import annotations

import ipaddress

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from guahao import clock, pii
from guahao.console.modeladmin import ConsoleModelAdmin
from guahao.errors import InvalidInput
from guahao.patients import services
from guahao.patients.idcard import age_on, normalize_id_number, validate_name, validate_phone
from guahao.patients.models import Account, Patient, PatientAddAttempt, PatientCard


def _phone_index_of(term: str) -> str | None:
    try:
        return pii.blind_index(validate_phone(term), purpose="phone")
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
        return bool(obj.wechat_openid)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        if not search_term.strip():
            return queryset, False  # no search: the whole list (and what an action selected)
        index = _phone_index_of(search_term)
        if index:
            return queryset.filter(phone_index=index), False
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
    return [pii.blind_index(f"{t}:{number}", purpose="id") for t in Patient.IdType.values]


def _name_index_of(term: str) -> str | None:
    try:
        return pii.blind_index(validate_name(term), purpose="name")
    except InvalidInput:
        return None


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
        term = search_term.strip()
        if not term:
            return queryset, False
        if ids := _id_indexes_of(term):
            return queryset.filter(id_index__in=ids), False
        if phone := _phone_index_of(term):
            return queryset.filter(Q(phone_index=phone) | Q(account__phone_index=phone)), False
        if name := _name_index_of(term):
            return queryset.filter(name_index=name), False
        return queryset.none(), False

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
            return queryset.filter(account__phone_index=phone), False
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
