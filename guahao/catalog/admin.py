"""The operator console for the catalog: hospitals, departments, doctors and notices."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from guahao.catalog import services
from guahao.catalog.models import Campus, Department, Doctor, Hospital, Notice, NoticeAck
from guahao.catalog.visitors import has_visitor_rules, visitor_rule_defaults
from guahao.console.modeladmin import ConsoleModelAdmin
from guahao.payments.channels import PaymentChannel, channel_labels, in_channel_order

LEVEL_LABELS = {1: "一级", 2: "二级", 3: "三级"}

# What each department level means to a patient choosing where to start (Hospital.browse_level).
BROWSE_LEVEL_CHOICES = (
    (1, "一级科室（如 内科、外科），再选下级"),
    (2, "二级科室（如 心血管内科、骨科）"),
    (3, "三级科室（如 心律失常门诊）"),
)


class CampusInline(admin.TabularInline):
    model = Campus
    extra = 0
    verbose_name = verbose_name_plural = "院区"


class DepartmentLevelFilter(admin.SimpleListFilter):
    title = "层级"
    parameter_name = "level"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [(str(level), f"{label}科室") for level, label in LEVEL_LABELS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(level=int(self.value())) if self.value() in ("1", "2", "3") else queryset


class HospitalForm(forms.ModelForm):
    payment_channels = forms.MultipleChoiceField(
        label="支付渠道",
        choices=PaymentChannel.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="患者确认挂号时可选的支付方式；未勾选的渠道会被拒绝",
        error_messages={"required": "请至少选择一种支付渠道"},
    )
    browse_level = forms.TypedChoiceField(
        label="患者从哪一级科室开始选择",
        choices=BROWSE_LEVEL_CHOICES,
        coerce=int,
        widget=forms.RadioSelect,
        help_text="与本院科室树的层级对应：选择的层级应有启用的科室，否则患者看不到可选科室",
    )

    class Meta:
        model = Hospital
        fields = (
            "code", "name", "short_name", "grade", "address", "service_phone",
            "browse_level", "schedule_days", "payment_channels", "is_active",
        )

    def clean_payment_channels(self) -> list[str]:
        return in_channel_order(self.cleaned_data["payment_channels"])


@admin.register(Hospital)
class HospitalAdmin(ConsoleModelAdmin):
    hospital_field = ""
    form = HospitalForm
    list_display = (
        "name", "code", "grade", "browse_level_label", "schedule_days", "channels", "service_phone", "is_active"
    )
    list_filter = ("is_active", "grade")
    search_fields = ("name", "code", "short_name")
    search_help_text = "按名称、简称或编码查找"
    inlines = [CampusInline]
    fieldsets = (
        (None, {"fields": ("code", "name", "short_name", "grade", "address", "service_phone", "is_active")}),
        ("患者端展示", {"fields": ("browse_level", "schedule_days")}),
        ("支付", {"fields": ("payment_channels",)}),
    )

    @admin.display(description="支付渠道")
    def channels(self, obj: Hospital) -> str:
        return channel_labels(obj.offered_channels)

    @admin.display(description="患者浏览层级", ordering="browse_level")
    def browse_level_label(self, obj: Hospital) -> str:
        return f"{LEVEL_LABELS.get(obj.browse_level, obj.browse_level)}科室"


@admin.register(Campus)
class CampusAdmin(ConsoleModelAdmin):
    list_display = ("name", "hospital", "address")
    list_filter = (("hospital", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("hospital",)
    search_fields = ("name", "address")
    search_help_text = "按院区名称或地址查找"


class DepartmentForm(forms.ModelForm):
    class Meta:
        model = Department
        fields = (
            "hospital", "campus", "parent", "code", "name", "intro", "location", "sort_order", "is_active",
            "min_age", "max_age", "sex",
        )
        help_texts = {"sex": "留空表示不限；新建科室时三项都留空，名称含“儿科”的默认 14 岁以下，含“妇科”“产科”的默认仅女性"}

    def clean(self):
        data = super().clean()
        low, high = data.get("min_age"), data.get("max_age")
        if low is not None and high is not None and low >= high:
            self.add_error("max_age", "年龄上限须大于最低年龄")
        parent, hospital = data.get("parent"), data.get("hospital")
        if parent is not None:
            if hospital is not None and parent.hospital_id != hospital.id:
                raise forms.ValidationError("上级科室须属于同一家医院")
            if parent.level >= 3:
                raise forms.ValidationError("科室最多三级：三级科室下不能再设下级科室")
            if self.instance.pk and parent.pk == self.instance.pk:
                raise forms.ValidationError("上级科室不能是自己")
        moved = self.instance.pk and "parent" in self.changed_data
        if moved and self.instance.children.exists():
            raise forms.ValidationError("该科室有下级科室，不能调整上级；请先调整其下级科室")
        return data


@admin.register(Department)
class DepartmentAdmin(ConsoleModelAdmin):
    form = DepartmentForm
    list_display = ("name", "parent", "level_label", "hospital", "code", "location", "sort_order", "is_active")
    list_filter = (
        ("hospital", admin.RelatedOnlyFieldListFilter),
        DepartmentLevelFilter,
        "is_active",
        ("campus", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("parent", "hospital")
    search_fields = ("name", "code")
    search_help_text = "按科室名称或 HIS 科室编码查找"
    ordering = ("hospital", "level", "sort_order", "id")
    readonly_fields = ("level_label",)
    autocomplete_fields = ("parent",)

    @admin.display(description="层级", ordering="level")
    def level_label(self, obj: Department) -> str:
        # The level follows the parent (set on save); a new department shows it once saved.
        return LEVEL_LABELS.get(obj.level, "—") if obj.pk else "由上级科室决定"

    def save_model(self, request: HttpRequest, obj: Department, form, change: bool) -> None:
        # The level follows the parent, so the tree the patients browse stays consistent.
        obj.level = obj.parent.level + 1 if obj.parent_id else 1
        if not change and not has_visitor_rules(obj):
            for field, value in visitor_rule_defaults(obj.name).items():
                setattr(obj, field, value)
        super().save_model(request, obj, form, change)


class DoctorForm(forms.ModelForm):
    class Meta:
        model = Doctor
        fields = ("hospital", "department", "code", "name", "title", "specialty", "intro", "sort_order", "is_active")

    def clean(self):
        data = super().clean()
        department, hospital = data.get("department"), data.get("hospital")
        if department is not None and hospital is not None and department.hospital_id != hospital.id:
            raise forms.ValidationError("所属科室须属于同一家医院")
        return data


@admin.register(Doctor)
class DoctorAdmin(ConsoleModelAdmin):
    form = DoctorForm
    list_display = ("name", "title", "department", "hospital", "code", "sort_order", "is_active")
    list_filter = (
        ("hospital", admin.RelatedOnlyFieldListFilter),
        "title",
        "is_active",
        ("department", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("department", "hospital")
    search_fields = ("name", "code", "specialty")
    search_help_text = "按姓名、HIS 医生编码或擅长查找"
    autocomplete_fields = ("department",)


class NoticeAddForm(forms.ModelForm):
    class Meta:
        model = Notice
        fields = ("hospital", "kind", "title", "body", "requires_ack")


@admin.register(Notice)
class NoticeAdmin(ConsoleModelAdmin):
    """Published text is what patients confirmed, so it is never edited in place: a change is a new
    version (“复制为新版本”), which every patient must confirm again."""

    list_display = ("title", "kind", "version", "hospital", "requires_ack", "is_active", "published_at", "ack_count")
    list_filter = (("hospital", admin.RelatedOnlyFieldListFilter), "kind", "is_active")
    search_fields = ("title", "body")
    search_help_text = "按标题或正文查找"
    actions = ["copy_as_new_version"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notice]:
        return super().get_queryset(request).select_related("hospital").annotate(n_acks=Count("acks"))

    @admin.display(description="确认人数", ordering="n_acks")
    def ack_count(self, obj: Notice) -> int:
        return obj.n_acks

    def get_form(self, request: HttpRequest, obj: Notice | None = None, change: bool = False, **kwargs):
        if obj is None:
            kwargs["form"] = NoticeAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Notice | None = None):
        if obj is None:
            return NoticeAddForm.Meta.fields
        return ("hospital", "kind", "version", "title", "body", "requires_ack", "is_active", "published_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Notice | None = None):
        if obj is None:
            return ()
        return ("hospital", "kind", "version", "title", "body", "requires_ack", "published_at")

    def save_model(self, request: HttpRequest, obj: Notice, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        published = services.publish_notice(
            hospital=obj.hospital, kind=obj.kind, title=obj.title, body=obj.body, requires_ack=obj.requires_ack
        )
        obj.pk, obj.version = published.pk, published.version
        messages.info(request, f"已发布第 {published.version} 版；患者须重新确认后方可预约")

    @admin.action(description="复制为新版本（编辑后发布）")
    def copy_as_new_version(self, request: HttpRequest, queryset: QuerySet[Notice]):
        if queryset.count() != 1:
            self.message_user(request, "请只选择一条须知", level=messages.WARNING)
            return None
        notice = queryset.get()
        initial = {
            "hospital": notice.hospital_id,
            "kind": notice.kind,
            "title": notice.title,
            "body": notice.body,
            "requires_ack": "on" if notice.requires_ack else "",
        }
        return HttpResponseRedirect(f"{reverse('admin:catalog_notice_add')}?{urlencode(initial)}")


@admin.register(NoticeAck)
class NoticeAckAdmin(ConsoleModelAdmin):
    hospital_field = "notice__hospital"
    list_display = ("notice", "account", "acked_at")
    list_filter = (("notice__hospital", admin.RelatedOnlyFieldListFilter), "notice__kind")
    list_select_related = ("notice", "account")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: NoticeAck | None = None) -> bool:
        return False
