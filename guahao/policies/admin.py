"""Restrictions in the console. The operator types the patient's document; only its blind index is
stored, so the ban follows the real person without the console keeping another copy of the ID."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from guahao.console.modeladmin import ConsoleModelAdmin
from guahao.errors import InvalidInput
from guahao.patients.models import Patient
from guahao.policies.models import Restriction
from guahao.policies.services import restrict_patient


class RestrictionForm(forms.ModelForm):
    id_type = forms.ChoiceField(label="证件类型", choices=Patient.IdType.choices)
    id_number = forms.CharField(label="证件号码", max_length=18, help_text="仅用于计算检索索引，不以明文保存")

    class Meta:
        model = Restriction
        fields = ("hospital", "reason", "until")

    def clean(self):
        cleaned = super().clean()
        from guahao.patients.idcard import parse_id_number

        try:
            parse_id_number(cleaned.get("id_number", ""), id_type=cleaned.get("id_type", ""))
        except InvalidInput as exc:
            self.add_error("id_number", exc.message)
        return cleaned


@admin.register(Restriction)
class RestrictionAdmin(ConsoleModelAdmin):
    list_display = ("id", "hospital", "reason", "until", "created_at", "lifted_at")
    list_filter = ("hospital", "lifted_at")
    actions = ["lift"]

    def get_form(self, request: HttpRequest, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = RestrictionForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return ("hospital", "reason", "until", "created_at", "lifted_at") if obj else ()

    def get_fields(self, request: HttpRequest, obj=None):
        if obj is None:
            return ("hospital", "id_type", "id_number", "reason", "until")
        return ("hospital", "reason", "until", "created_at", "lifted_at")

    def save_model(self, request: HttpRequest, obj: Restriction, form, change: bool) -> None:
        if change:
            return
        created = restrict_patient(
            hospital=form.cleaned_data["hospital"],
            id_type=form.cleaned_data["id_type"],
            id_number=form.cleaned_data["id_number"],
            reason=form.cleaned_data["reason"],
            until=form.cleaned_data["until"],
        )
        obj.pk = created.pk

    @admin.action(description="解除所选限制")
    def lift(self, request: HttpRequest, queryset) -> None:
        from guahao.policies.services import lift_restriction

        for restriction in queryset:
            lift_restriction(restriction_id=restriction.id)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # lift instead: the history of bans is kept
