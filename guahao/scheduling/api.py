"""Schedules for patients: the availability calendar of a department or doctor, and the time windows
of one session. Public (no sign-in): browsing comes before logging in."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable

from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Router, Schema

from guahao.catalog import selectors as catalog
from guahao.freshness import FreshCache, etag_matches, etag_of
from guahao.scheduling import selectors

router = Router(tags=["排班与号源"])


class DoctorBriefOut(Schema):
    id: int
    name: str
    title: str
    title_label: str


class DepartmentBriefOut(Schema):
    id: int
    name: str


class SessionOut(Schema):
    id: int
    date: dt.date
    period: str
    period_label: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    department: DepartmentBriefOut
    doctor: DoctorBriefOut | None
    registration_type: str
    fee_fen: int
    capacity: int
    remaining: int
    status: str
    status_label: str
    release_at: dt.datetime | None


class DayOut(Schema):
    date: dt.date
    weekday: str
    has_slots: bool
    sessions: list[SessionOut]


class DepartmentAvailabilityOut(Schema):
    department: DepartmentBriefOut
    days: list[DayOut]


class DoctorHeaderOut(DoctorBriefOut):
    specialty: str
    department: DepartmentBriefOut


class DoctorAvailabilityOut(Schema):
    doctor: DoctorHeaderOut
    days: list[DayOut]


class SlotWindowOut(Schema):
    window_start: dt.datetime
    window_end: dt.datetime
    total: int
    free: int
    slot_id: int | None
    closed: bool = Field(description="该时段已开始或即将开始（放号规则的截止分钟数内），不再接受预约")


class SessionSlotsOut(Schema):
    session: SessionOut
    windows: list[SlotWindowOut]


DAYS = Query(7, ge=1, le=14, description="展示天数（1–14，不超过医院设置的排班展示天数）")

# The rendered answers (body and ETag), shared by this process's threads; see freshness.py.
answers: FreshCache[tuple[bytes, str]] = FreshCache()


def _fresh(request: HttpRequest, key: Hashable, schema: type[Schema], build: Callable[[dt.datetime], object]) -> HttpResponse:
    """The answer for `key` as of at most a second ago, rendered once for every request that
    second; a phone that sends the ETag it has gets 304 without a body. `no-cache`: a phone asks
    again each time (cheaply), so what it shows is never older than the server's second."""

    # The project's renderer (Chinese left unescaped); imported here because api imports this module.
    from guahao.api import api

    def render(now: dt.datetime) -> tuple[bytes, str]:
        data = schema.model_validate(build(now)).model_dump(by_alias=True)
        body = api.renderer.render(request, data, response_status=200)
        body = body.encode() if isinstance(body, str) else body
        return body, etag_of(body)

    body, etag = answers.get(key, render).value
    if etag_matches(request.headers.get("If-None-Match", ""), etag):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
    response["ETag"] = etag
    response["Cache-Control"] = "no-cache"
    return response


@router.get("/departments/{department_id}/availability", response=DepartmentAvailabilityOut)
def department_availability(request: HttpRequest, department_id: int, days: int = DAYS):
    def build(now: dt.datetime) -> dict:
        department = catalog.get_department(department_id)
        calendar = selectors.availability(department=department, days=days, now=now)
        return {"department": {"id": department.id, "name": department.name}, "days": calendar}

    return _fresh(request, ("department", department_id, days), DepartmentAvailabilityOut, build)


@router.get("/doctors/{doctor_id}/availability", response=DoctorAvailabilityOut)
def doctor_availability(request: HttpRequest, doctor_id: int, days: int = DAYS):
    def build(now: dt.datetime) -> dict:
        doctor = catalog.get_doctor(doctor_id)
        calendar = selectors.availability(doctor=doctor, days=days, now=now)
        header = {
            "id": doctor.id,
            "name": doctor.name,
            "title": doctor.title,
            "title_label": doctor.get_title_display(),
            "specialty": doctor.specialty,
            "department": {"id": doctor.department.id, "name": doctor.department.name},
        }
        return {"doctor": header, "days": calendar}

    return _fresh(request, ("doctor", doctor_id, days), DoctorAvailabilityOut, build)


@router.get("/sessions/{session_id}/slots", response=SessionSlotsOut)
def session_slots(request: HttpRequest, session_id: int):
    def build(now: dt.datetime) -> selectors.SessionSlots:
        return selectors.slots_of(selectors.get_session(session_id), now=now)

    return _fresh(request, ("slots", session_id), SessionSlotsOut, build)
