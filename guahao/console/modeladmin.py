"""The base of every console page: rows of the staff member's hospitals only, and every change
made through a form written to the audit log with what it was before and after."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from guahao.console.models import AuditEntry
from guahao.console.selectors import hospital_ids_of
from guahao.console.services import record_audit


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, list | tuple | QuerySet):
        return [_plain(v) for v in value]
    return str(value)


class ConsoleModelAdmin(admin.ModelAdmin):
    """`hospital_field` is the lookup from the model to its Hospital ("" for Hospital itself,
    None for rows that belong to no hospital). A staff member's queryset, the choices of every
    hospital-owned foreign key and so the objects reachable by URL are their hospitals' only: a
    guessed id of another hospital's row is "not found"."""

    hospital_field: str | None = "hospital"
    # True when the path crosses a to-many relation (a patient's holds): filtered by subquery,
    # so a row never shows twice.
    hospital_many = False

    def scope(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        ids = hospital_ids_of(request.user)
        if ids is None or self.hospital_field is None:
            return queryset
        key = f"{self.hospital_field}__in" if self.hospital_field else "id__in"
        if self.hospital_many:
            return queryset.filter(pk__in=queryset.model._default_manager.filter(**{key: ids}).values("pk"))
        return queryset.filter(**{key: ids})

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return self.scope(request, super().get_queryset(request))

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        ids = hospital_ids_of(request.user)
        if ids is not None and field is not None and hasattr(field, "queryset"):
            model = db_field.related_model
            if model._meta.label == "catalog.Hospital":
                field.queryset = field.queryset.filter(id__in=ids)
            elif any(f.name == "hospital" for f in model._meta.get_fields()):
                field.queryset = field.queryset.filter(hospital__in=ids)
        return field

    # --- audit -----------------------------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: models.Model, form, change: bool) -> None:
        fields = list(form.changed_data) if change else list(form.cleaned_data)
        before = {f: _plain(form.initial.get(f)) for f in fields} if change else None
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            after = {f: _plain(form.cleaned_data.get(f)) for f in fields}
            record_audit(
                request=request,
                action=AuditEntry.Action.CHANGE if change else AuditEntry.Action.ADD,
                obj=obj,
                hospital=self._hospital_of(obj),
                before=before,
                after=after,
            )

    def delete_model(self, request: HttpRequest, obj: models.Model) -> None:
        with transaction.atomic():
            record_audit(request=request, action=AuditEntry.Action.DELETE, obj=obj, hospital=self._hospital_of(obj))
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        with transaction.atomic():
            for obj in queryset:
                record_audit(request=request, action=AuditEntry.Action.DELETE, obj=obj, hospital=self._hospital_of(obj))
            super().delete_queryset(request, queryset)

    def _hospital_of(self, obj: models.Model):
        if self.hospital_field == "":
            return obj
        if not self.hospital_field:
            return None
        target: Any = obj
        for part in self.hospital_field.split("__"):
            target = getattr(target, part, None)
            if target is None:
                return None
        return target


class ReadOnlyConsoleAdmin(ConsoleModelAdmin):
    """Rows that change only through services (money, holds, slots): nobody edits them here."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
