"""The console's read view of holds and registrations. Changes go through services (cancel and
refund on behalf come with the operator console work), so these pages are read-only."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from guahao import pii
from guahao.booking.models import Hold, Registration
from guahao.console.modeladmin import ReadOnlyConsoleAdmin


@admin.register(Registration)
class RegistrationAdmin(ReadOnlyConsoleAdmin):
    hospital_field = "session__hospital"
    list_display = ("registration_no", "masked_patient", "session", "slot_seq", "status", "fee_yuan", "booked_at")
    list_filter = ("status", "session__date", "session__department")
    search_fields = ("=registration_no",)
    search_help_text = "按挂号单号查找"
    date_hierarchy = "booked_at"
    fields = ("registration_no", "masked_patient", "session", "slot_seq", "status", "fee_yuan", "booked_at",
              "cancelled_at", "cancel_reason")
    readonly_fields = fields
    list_select_related = ("patient", "session__department", "session__doctor", "slot")

    @admin.display(description="就诊人")
    def masked_patient(self, obj: Registration) -> str:
        return pii.mask_name(obj.patient.name)

    @admin.display(description="号序")
    def slot_seq(self, obj: Registration) -> int:
        return obj.slot.seq

    @admin.display(description="挂号费（元）")
    def fee_yuan(self, obj: Registration) -> str:
        return f"{obj.fee_fen / 100:.2f}"


@admin.register(Hold)
class HoldAdmin(ReadOnlyConsoleAdmin):
    hospital_field = "session__hospital"
    list_display = ("id", "session", "slot_seq", "state", "expires_at", "channel", "created_at")
    list_filter = ("state", "channel")
    search_fields = ("=id",)
    fields = ("id", "session", "slot_seq", "state", "expires_at", "channel", "insurance", "fee_fen", "created_at", "updated_at")
    readonly_fields = fields
    list_select_related = ("session__department", "session__doctor", "slot")

    @admin.display(description="号序")
    def slot_seq(self, obj: Hold) -> int:
        return obj.slot.seq

    def get_queryset(self, request: HttpRequest) -> QuerySet[Hold]:
        return super().get_queryset(request).order_by("-id")
