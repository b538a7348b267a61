"""The operator console for schedules: registration types, release rules, sessions and their slots."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from guahao import clock
from guahao.console.modeladmin import ConsoleModelAdmin
from guahao.scheduling import selectors, services
from guahao.scheduling.models import RegistrationType, ReleaseRule, Session, Slot


def _yuan(fen: int) -> str:
    return f"{fen / 100:.2f} 元"


@admin.register(RegistrationType)
class RegistrationTypeAdmin(ConsoleModelAdmin):
    list_display = ("name", "code", "hospital", "default_fee")
    list_filter = ("hospital",)

    @admin.display(description="默认挂号费", ordering="default_fee_fen")
    def default_fee(self, obj: RegistrationType) -> str:
        return _yuan(obj.default_fee_fen)


@admin.register(ReleaseRule)
class ReleaseRuleAdmin(ConsoleModelAdmin):
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
    )
    list_filter = ("hospital",)
    list_select_related = ("hospital", "department")
    autocomplete_fields = ("department",)


class SlotInline(admin.TabularInline):
    model = Slot
    extra = 0
    can_delete = False
    fields = ("seq", "window_start", "window_end", "state", "held_until", "his_code")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Session | None = None) -> bool:
        return False


@admin.register(Session)
class SessionAdmin(ConsoleModelAdmin):
    """Sessions come from the HIS or `scheduling.services.create_session` (which makes the slots), so
    the console does not add them; 停诊 goes through the action, which also informs booking."""

    list_display = (
        "date",
        "period",
        "department",
        "doctor",
        "registration_type",
        "fee",
        "slot_counts",
        "status",
        "suspend_reason",
    )
    list_filter = ("status", "period", "hospital", "registration_type__name", "department", ("date", admin.DateFieldListFilter))
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
        "fee_fen",
        "capacity",
        "status",
        "suspend_reason",
    )
    inlines = [SlotInline]
    actions = ["suspend"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Session]:
        return selectors.with_slot_counts(super().get_queryset(request), now=clock.now())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="挂号费", ordering="fee_fen")
    def fee(self, obj: Session) -> str:
        return _yuan(obj.fee_fen)

    @admin.display(description="剩余/号源", ordering="free")
    def slot_counts(self, obj: Session) -> str:
        return f"{obj.free}/{obj.total}"

    @admin.action(description="停诊（停止预约，并通知已预约患者退号退费）")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        count = 0
        for session in queryset.filter(status=Session.Status.OPEN):
            services.suspend_session(session=session, reason="医院安排停诊")
            count += 1
        self.message_user(request, f"已停诊 {count} 个排班", level=messages.SUCCESS)


@admin.register(Slot)
class SlotAdmin(ConsoleModelAdmin):
    hospital_field = "session__hospital"
    """Read-only: a slot changes only through holds and registrations."""

    list_display = ("session", "seq", "window_start", "window_end", "state", "held_until", "his_code")
    list_filter = ("state", ("session__date", admin.DateFieldListFilter), "session__hospital")
    list_select_related = ("session__department", "session__doctor")
    search_fields = ("session__doctor__name", "session__department__name", "his_code")
    readonly_fields = ("session", "seq", "window_start", "window_end", "state", "held_until", "his_code")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Slot | None = None) -> bool:
        return False
