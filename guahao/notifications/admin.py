"""The console's messaging pages: each hospital's 消息设置 and 消息模板, the deliveries to outside
channels (a parked one can be sent again), the background events that kept failing (待处理事件,
retried by staff), and the scheduler's record of its jobs."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join

from guahao.console.modeladmin import ConsoleModelAdmin
from guahao.console.selectors import hospital_ids_of
from guahao.notifications import messaging, templates
from guahao.notifications import services as outbox
from guahao.notifications.models import (
    Delivery,
    JobRun,
    MessageTemplate,
    MessagingSettings,
    OutboxEvent,
    Topic,
)


def _placeholder_help() -> str:
    return "可用占位符（患者信息均已脱敏）：" + "、".join(f"{{{name}}}" for name in templates.PLACEHOLDERS)


class MessageTemplateForm(forms.ModelForm):
    class Meta:
        model = MessageTemplate
        fields = ("hospital", "topic", "title", "body")
        help_texts = {"body": _placeholder_help()}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for field in ("title", "body"):
            unknown = templates.unknown_placeholders(cleaned.get(field) or "")
            if unknown:
                self.add_error(field, "未知的占位符：" + "、".join(f"{{{name}}}" for name in unknown))
        return cleaned


@admin.register(MessageTemplate)
class MessageTemplateAdmin(ConsoleModelAdmin):
    form = MessageTemplateForm
    list_display = ("hospital", "topic", "title", "body", "updated_at")
    list_filter = (("hospital", admin.RelatedOnlyFieldListFilter), "topic")
    readonly_fields = ("default_wording",)

    def get_fields(self, request: HttpRequest, obj: MessageTemplate | None = None) -> tuple[str, ...]:
        return ("hospital", "topic", "title", "body", "default_wording")

    @admin.display(description="系统默认内容")
    def default_wording(self, obj: MessageTemplate | None) -> str:
        return format_html_join(
            "", "<p><b>{}</b>：{} —— {}</p>", ((Topic(t).label, title, body) for t, (title, body) in templates.DEFAULTS.items())
        )


@admin.register(MessagingSettings)
class MessagingSettingsAdmin(ConsoleModelAdmin):
    list_display = ("hospital", "wechat_enabled", "sms_enabled", "remind_day_before", "remind_day_before_at", "remind_hours_before")
    fieldsets = (
        (None, {"fields": ("hospital",)}),
        ("渠道", {"fields": ("wechat_enabled", "sms_enabled", "sms_sign_name", "sms_templates")}),
        ("就诊提醒", {"fields": ("remind_day_before", "remind_day_before_at", "remind_hours_before")}),
    )


class DeliveryStateFilter(admin.SimpleListFilter):
    title = "按状态"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(Delivery.State.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(state=self.value()) if self.value() else queryset


@admin.register(Delivery)
class DeliveryAdmin(ConsoleModelAdmin):
    list_display = ("id", "hospital", "topic", "channel", "state", "attempts", "created_at", "sent_at", "last_error")
    list_filter = (DeliveryStateFilter, "channel", "topic")
    ordering = ("-id",)
    actions = ["send_again"]
    readonly_fields = ("event", "channel", "hospital", "topic", "title", "text", "state", "attempts", "created_at", "sent_at", "provider_ref", "last_error")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False

    @admin.action(description="重新发送所选的已搁置或无法送达的消息", permissions=["retry"])
    def send_again(self, request: HttpRequest, queryset: QuerySet) -> None:
        again = sum(messaging.retry_delivery(delivery_id=d) for d in queryset.values_list("id", flat=True))
        self.message_user(request, f"已重新安排发送 {again} 条消息", level=messages.SUCCESS)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("notifications.retry_delivery")


class EventStateFilter(admin.SimpleListFilter):
    title = "按状态"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("parked", "已搁置"), ("retrying", "重试中"), ("done", "已完成")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "parked":
            return queryset.filter(parked_at__isnull=False, processed_at__isnull=True)
        if self.value() == "retrying":
            return queryset.filter(parked_at__isnull=True, processed_at__isnull=True, attempts__gt=0)
        if self.value() == "done":
            return queryset.filter(processed_at__isnull=False)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(ConsoleModelAdmin):
    """Events carry ids only, and may concern any hospital: platform staff only."""

    hospital_field = None
    list_display = ("id", "topic", "payload", "state", "attempts", "created_at", "last_error")
    list_filter = (EventStateFilter, "topic")
    search_fields = ("topic",)
    ordering = ("-id",)
    actions = ["retry"]
    readonly_fields = ("topic", "payload", "created_at", "available_at", "attempts", "processed_at", "parked_at", "last_error")
    fields = readonly_fields

    def has_module_permission(self, request: HttpRequest) -> bool:
        return hospital_ids_of(request.user) is None and super().has_module_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: OutboxEvent | None = None) -> bool:
        return hospital_ids_of(request.user) is None and super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: OutboxEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: OutboxEvent | None = None) -> bool:
        return False

    @admin.display(description="状态")
    def state(self, obj: OutboxEvent) -> str:
        if obj.processed_at:
            return "已完成"
        if obj.parked_at:
            return "已搁置"
        return "重试中" if obj.attempts else "待处理"

    @admin.action(description="重新处理所选的已搁置事件", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet) -> None:
        again = sum(outbox.retry_event(event_id=e) for e in queryset.values_list("id", flat=True))
        self.message_user(request, f"已重新安排处理 {again} 个事件", level=messages.SUCCESS)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("notifications.retry_event")


@admin.register(JobRun)
class JobRunAdmin(ConsoleModelAdmin):
    hospital_field = None
    list_display = ("key", "created_at", "holder", "started_at", "runner", "finished_at", "result")
    ordering = ("-created_at",)
    search_fields = ("key",)

    def has_view_permission(self, request: HttpRequest, obj: JobRun | None = None) -> bool:
        return hospital_ids_of(request.user) is None and super().has_view_permission(request, obj)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return hospital_ids_of(request.user) is None and super().has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: JobRun | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: JobRun | None = None) -> bool:
        return False


