"""The console's view of accounts and visiting patients. Phones and ID numbers appear masked only:
the encrypted columns are never form fields, and search goes through the blind indexes."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from guahao import clock, pii
from guahao.errors import InvalidInput
from guahao.patients.idcard import age_on, normalize_id_number, validate_phone
from guahao.patients.models import Account, AccountPatient, Patient, PatientCard


def _phone_index_of(term: str) -> str | None:
    try:
        return pii.blind_index(validate_phone(term), purpose="phone")
    except InvalidInput:
        return None


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("id", "masked_phone", "wechat_bound", "is_active", "created_at")
    list_filter = ("is_active",)
    fields = ("masked_phone", "wechat_bound", "is_active", "created_at")
    readonly_fields = ("masked_phone", "wechat_bound", "created_at")
    search_fields = ("=id",)
    search_help_text = "按完整手机号或账号ID查找"
    ordering = ("-id",)

    @admin.display(description="手机号")
    def masked_phone(self, obj: Account) -> str:
        return pii.mask_phone(obj.phone)

    @admin.display(description="已绑定微信", boolean=True)
    def wechat_bound(self, obj: Account) -> bool:
        return bool(obj.wechat_openid)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
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


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "masked_name",
        "id_type",
        "masked_id_number",
        "sex",
        "age",
        "masked_phone",
        "verified_at",
    )
    list_filter = ("id_type", "sex")
    fields = (
        "masked_name",
        "id_type",
        "masked_id_number",
        "sex",
        "age",
        "masked_phone",
        "verified_at",
        "created_at",
    )
    readonly_fields = fields
    search_fields = ("name",)
    search_help_text = "按完整姓名或完整证件号码查找"
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
        number = normalize_id_number(search_term)
        if len(number) == 18:
            indexes = [
                pii.blind_index(f"{t}:{number}", purpose="id") for t in Patient.IdType.values
            ]
            return queryset.filter(id_index__in=indexes), False
        term = search_term.strip()
        return (queryset.filter(name=term) if term else queryset), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # patients are added by their accounts, through real-name verification

    def has_change_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False  # a verified identity is not edited by hand

    def has_delete_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False  # registrations refer to the patient


@admin.register(AccountPatient)
class AccountPatientAdmin(admin.ModelAdmin):
    list_display = ("id", "account", "patient", "relation", "created_at")
    list_filter = ("relation",)
    fields = ("account", "patient", "relation", "created_at")
    readonly_fields = fields
    search_fields = ("=account__id", "=patient__id")
    search_help_text = "按账号ID或就诊人ID查找"
    list_select_related = ("account", "patient")
    ordering = ("-id",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # linking goes through the account's own real-name flow

    def has_change_permission(
        self, request: HttpRequest, obj: AccountPatient | None = None
    ) -> bool:
        return False


@admin.register(PatientCard)
class PatientCardAdmin(admin.ModelAdmin):
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
