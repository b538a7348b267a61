"""List filters shared by console pages."""

from __future__ import annotations

import datetime as dt

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from guahao import clock


class VisitDayFilter(admin.SimpleListFilter):
    """就诊日期: today, tomorrow, the next 7 days, or past days. `date_field` is the lookup to a
    DateField (a session's date)."""

    title = "就诊日期"
    parameter_name = "visit_day"
    date_field = "session__date"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("today", "今天"), ("tomorrow", "明天"), ("next7", "未来 7 天"), ("past", "已过去")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        today = clock.today()
        value = self.value()
        if value == "today":
            return queryset.filter(**{self.date_field: today})
        if value == "tomorrow":
            return queryset.filter(**{self.date_field: today + dt.timedelta(days=1)})
        if value == "next7":
            return queryset.filter(**{f"{self.date_field}__range": (today, today + dt.timedelta(days=6))})
        if value == "past":
            return queryset.filter(**{f"{self.date_field}__lt": today})
        return queryset


class SessionDayFilter(VisitDayFilter):
    title = "出诊日期"
    date_field = "date"
