"""The patient H5 pages that are not the booking flow: home, sign-in, notices, departments,
schedules, search and the 长辈版 switch. Views parse, call selectors and services, and render;
the rules live in the apps they belong to (the same ones the API calls)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from guahao import clock
from guahao.booking.selectors import recent_doctors
from guahao.catalog import selectors as catalog
from guahao.catalog import services as catalog_services
from guahao.errors import GuahaoError, NotFound
from guahao.freshness import FreshCache
from guahao.limits.clientip import client_ip
from guahao.patients import services as patients
from guahao.patients.captcha import CaptchaRequired
from guahao.scheduling import selectors as scheduling
from guahao.web import schedule
from guahao.web.auth import account_required, sign_in, sign_out, signed_in_account
from guahao.web.context import ELDER_COOKIE
from guahao.web.hospital import current_hospital
from guahao.wechat.web import bind_after_sign_in, mark_signed_out

ELDER_COOKIE_AGE = 365 * 24 * 3600


def safe_next(request: HttpRequest, default: str = "/") -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if wanted.startswith("/") and url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return wanted
    return default


def notices_first(request: HttpRequest, next_path: str) -> str:
    """Where a signed-in patient goes next: the notices they still owe, or `next_path`."""
    account = signed_in_account(request)
    if account is not None and catalog.pending_notices(account=account, hospital=current_hospital(request)):
        return "/notices?" + _query(next=next_path)
    return next_path


def _query(**params: str) -> str:
    return urlencode(params)


# --- home -------------------------------------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    hospital = current_hospital(request)
    account = signed_in_account(request)
    return render(
        request,
        "web/home.html",
        {
            "campuses": list(hospital.campuses.all()),
            "notices": catalog.current_notices(hospital),
            "pending": catalog.pending_notices(account=account, hospital=hospital) if account else [],
            "recent": _recent_doctors(account, hospital),
        },
    )


# --- sign-in ----------------------------------------------------------------------------------


def login(request: HttpRequest) -> HttpResponse:
    next_path = safe_next(request)
    if request.method == "POST":
        phone = request.POST.get("phone", "").strip()
        try:
            key = patients.login(
                phone=phone,
                code=request.POST.get("code", ""),
                client_ip=client_ip(request),
                user_agent=request.headers.get("User-Agent", ""),
            )
        except GuahaoError as exc:
            return _login_page(request, phone=phone, next_path=next_path, error=exc.message, http_status=exc.status)
        sign_in(request, key)
        bind_after_sign_in(request, signed_in_account(request).id)  # inside WeChat: openid → this account, once
        return HttpResponseRedirect(notices_first(request, next_path))
    if signed_in_account(request) is not None:
        return HttpResponseRedirect(next_path)
    return _login_page(request, phone="", next_path=next_path)


@require_POST
def send_code(request: HttpRequest) -> HttpResponse:
    """Send a sign-in code; htmx swaps only the status line (and the captcha when one is due)."""
    phone = request.POST.get("phone", "").strip()
    status: dict = {"sent": False, "message": "", "captcha": None}
    try:
        patients.send_sms_code(
            phone=phone,
            client_ip=client_ip(request),
            captcha_key=request.POST.get("captcha_key", ""),
            captcha_answer=request.POST.get("captcha_answer", ""),
        )
        status.update(sent=True, message="验证码已发送，5分钟内有效")
    except CaptchaRequired as exc:
        status.update(message=exc.message, captcha=exc.detail)
    except GuahaoError as exc:
        status.update(message=exc.message)
    if request.headers.get("HX-Request"):
        return render(request, "web/_code_status.html", {"status": status})
    return _login_page(request, phone=phone, next_path=safe_next(request), status=status)


def _login_page(
    request: HttpRequest,
    *,
    phone: str,
    next_path: str,
    error: str = "",
    status: dict | None = None,
    http_status: int = 200,
) -> HttpResponse:
    context = {"phone": phone, "next": next_path, "error": error, "status": status or {}}
    return render(request, "web/login.html", context, status=http_status)


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    sign_out(request)
    mark_signed_out(request)  # inside WeChat: no silent openid sign-in straight back
    return HttpResponseRedirect("/")


# --- notices ----------------------------------------------------------------------------------


def notices(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _acknowledge(request)
    hospital = current_hospital(request)
    account = signed_in_account(request)
    current = catalog.current_notices(hospital)
    pending = catalog.pending_notices(account=account, hospital=hospital) if account else []
    return render(
        request,
        "web/notices.html",
        {"notices": current, "pending_ids": {n.id for n in pending}, "pending": pending, "next": safe_next(request)},
    )


@account_required
def _acknowledge(request: HttpRequest) -> HttpResponse:
    for notice_id in request.POST.getlist("notice"):
        if notice_id.isdigit():
            catalog_services.acknowledge_notice(account=request.account, notice_id=int(notice_id))
    return HttpResponseRedirect(notices_first(request, safe_next(request)))


# --- 长辈版 --------------------------------------------------------------------------------------


@require_POST
def toggle_elder(request: HttpRequest) -> HttpResponse:
    response = HttpResponseRedirect(safe_next(request))
    on = request.COOKIES.get(ELDER_COOKIE) != "1"
    response.set_cookie(ELDER_COOKIE, "1" if on else "0", max_age=ELDER_COOKIE_AGE, samesite="Lax", httponly=True)
    return response


# --- departments and schedules ----------------------------------------------------------------


@require_GET
def departments(request: HttpRequest) -> HttpResponse:
    hospital = current_hospital(request)
    roots = catalog.department_tree(hospital)
    chosen = None
    if hospital.browse_level > 1 and roots:
        wanted = request.GET.get("root", "")
        # A root without sub-departments (皮肤科) links straight to its schedule; the right list
        # shows the chosen root's children, by default the first root that has some.
        chosen = (
            next((r for r in roots if str(r.id) == wanted), None)
            or next((r for r in roots if r.children), None)
            or roots[0]
        )
    return render(
        request,
        "web/departments.html",
        {"roots": roots, "chosen": chosen, "level": hospital.browse_level},
    )


_calendars: FreshCache[list[scheduling.DayAvailability]] = FreshCache()


def _strip_page(request: HttpRequest, *, owner, department=None, doctor=None, template: str, extra: dict) -> HttpResponse:
    now = clock.now()
    rule = scheduling.release_rule_for(department if department is not None else doctor.department)
    days = schedule.strip_length(rule, schedule_days=owner.hospital.schedule_days)
    # The calendar as of at most FRESH_SECONDS ago, shared with every phone refreshing this page.
    key = ("department", department.id, days) if department is not None else ("doctor", doctor.id, days)
    calendar = _calendars.get(
        key, lambda as_of: scheduling.availability(department=department, doctor=doctor, days=days, now=as_of)
    ).value
    strip = schedule.strip_days(calendar, rule=rule, now=now)
    chosen = schedule.choose_day(strip, request.GET.get("date", ""))
    context = {
        "strip": strip,
        "chosen": chosen,
        "periods": schedule.periods_of(chosen),
        "base_path": request.path,
        "session_href": _session_href(request),
        **extra,
    }
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "schedule":
        return render(request, "web/_schedule.html", context)
    return render(request, template, context)


def _session_href(request: HttpRequest) -> str:
    """Sessions link to the booking page; a signed-in patient who owes notices reads them first."""
    account = signed_in_account(request)
    if account is not None and catalog.pending_notices(account=account, hospital=current_hospital(request)):
        return "/notices?next=/sessions/"
    return "/sessions/"


@require_GET
def department(request: HttpRequest, department_id: int) -> HttpResponse:
    hospital = current_hospital(request)
    found = catalog.get_department(department_id, hospital=hospital)
    return _strip_page(request, owner=found, department=found, template="web/department.html", extra={"department": found})


@require_GET
def doctor(request: HttpRequest, doctor_id: int) -> HttpResponse:
    hospital = current_hospital(request)
    found = catalog.get_doctor(doctor_id)
    if found.hospital_id != hospital.id:
        raise NotFound("医生不存在或已停用", code="doctor_not_found")
    return _strip_page(request, owner=found, doctor=found, template="web/doctor.html", extra={"doctor": found})


# --- search -----------------------------------------------------------------------------------


@require_GET
def search(request: HttpRequest) -> HttpResponse:
    hospital = current_hospital(request)
    q = request.GET.get("q", "").strip()[:40]
    departments_found, doctors_found = [], []
    if q:
        departments_found, doctors_found = _search(hospital, q)
    context = {
        "q": q,
        "departments": departments_found,
        "doctors": doctors_found,
        "recent": _recent_doctors(signed_in_account(request), hospital),
    }
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "results":
        return render(request, "web/_search_results.html", context)
    return render(request, "web/search.html", context)


def _search(hospital, q: str) -> tuple[list, list]:
    found = catalog.search(hospital, q, limit=20)
    return list(found.departments), list(found.doctors)


def _recent_doctors(account, hospital) -> list:
    if account is None:
        return []
    return list(recent_doctors(account, hospital=hospital, limit=10))

