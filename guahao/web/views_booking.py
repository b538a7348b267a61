"""The booking pages: a session's time windows, the hold with its countdown (patient, channel,
pay, cancel), the outcome, and 我的挂号. Parse, authorise, call the booking services and selectors
(the same ones /api/v1 calls), render: no rule of their own."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from guahao import clock, pii
from guahao.booking import selectors, services
from guahao.booking.models import Hold, Registration
from guahao.booking.selectors import RegistrationRefund
from guahao.booking.states import HoldState, RegistrationStatus
from guahao.catalog import selectors as catalog_selectors
from guahao.errors import Conflict, GuahaoError, InvalidInput, NotFound
from guahao.limits import services as limits
from guahao.limits.clientip import client_ip
from guahao.patients import selectors as patient_selectors
from guahao.scheduling import selectors as schedule_selectors
from guahao.scheduling.selectors import release_rule_for
from guahao.web.auth import account_required, signed_in_account
from guahao.web.errors import error_page

# Refusals of a hold that a fresh look at the windows answers: the page shows them above the list.
_WINDOW_REFUSALS = {
    "window_full",
    "slot_taken",
    "window_not_found",
    "window_closed",
    "his_refused",
    "session_suspended",
    "session_closed",
    "not_released",
    "live_hold_limit",
    "daily_hold_limit",
}
# Refusals on the hold page that the patient fixes on the same page.
_HOLD_REFUSALS = {
    "patient_not_found",
    "invalid_channel",
    "channel_not_offered",
    "duplicate_booking",
    "patient_restricted",
    "patient_restricted_no_show",
    "patient_restricted_cancel",
    "patient_daily_limit",
    "patient_department_limit",
    "department_age_limit",
    "department_sex_limit",
    "patient_fixed_after_payment",
    "hold_not_confirmed",
    "payment_already_paid",
    "nothing_to_pay",
}
LIVE = (HoldState.HELD, HoldState.PAYING)
OVER = (HoldState.REGISTERING, HoldState.SUCCEEDED, HoldState.FAILED)

# 我的挂号: the 待支付 tab, then one tab per registration status, in the order patients look.
TABS = [
    ("pending", "待支付"),
    (RegistrationStatus.BOOKED.value, RegistrationStatus.BOOKED.label),
    (RegistrationStatus.CHECKED_IN.value, RegistrationStatus.CHECKED_IN.label),
    (RegistrationStatus.VISITED.value, RegistrationStatus.VISITED.label),
    (RegistrationStatus.CANCELLED.value, RegistrationStatus.CANCELLED.label),
    (RegistrationStatus.REFUNDING.value, RegistrationStatus.REFUNDING.label),
    (RegistrationStatus.NO_SHOW.value, RegistrationStatus.NO_SHOW.label),
]
NO_SHOW_RULE = "预约后未在就诊时段结束前取号即记为爽约；爽约次数过多将被限制预约一段时间。"
REFUND_RULE = "取消后挂号费全额原路退回，通常 1–3 个工作日到账。"


# --- presentation --------------------------------------------------------------------------------


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _window_label(start: dt.datetime, end: dt.datetime) -> str:
    return f"{clock.local(start):%H:%M}–{clock.local(end):%H:%M}"


def _date_label(day: dt.date) -> str:
    return f"{day:%Y年%m月%d日} {schedule_selectors.WEEKDAYS[day.weekday()]}"


def _session_view(session) -> dict:
    doctor = session.doctor
    department = session.department
    campus = department.campus if department.campus_id else None
    return {
        "id": session.id,
        "date": _date_label(session.date),
        "period": session.get_period_display(),
        "department": department.name,
        "department_id": department.id,
        "doctor": f"{doctor.name} {doctor.get_title_display()}" if doctor else "普通门诊",
        "location": " ".join(
            p for p in (campus.name if campus else "", session.location or department.location) if p
        ),
        "fee": yuan(session.fee_fen),
        "registration_type": session.registration_type.name if session.registration_type_id else "",
    }


def _patient_choice(patient) -> dict:
    return {
        "id": patient.id,
        "name": pii.mask_name(patient.name),
        "relation": patient.get_relation_display(),
        "id_number": pii.mask_id_number(patient.id_number),
        "is_default": patient.is_default,
    }


def offered_channels(hospital) -> list[tuple[str, str]]:
    """The payment channels the hospital offers, as (value, label), in the order patients see."""
    return [(c, Hold.Channel(c).label) for c in catalog_selectors.payment_channels_of(hospital)]


def _hold_view(hold: Hold, now: dt.datetime) -> dict:
    state = selectors.effective_state(hold, now)
    return {
        "id": hold.id,
        "state": state.value,
        "state_label": state.label,
        "session": _session_view(hold.session),
        "seq": hold.slot.seq,
        "window": _window_label(hold.slot.window_start, hold.slot.window_end),
        "fee": yuan(hold.fee_fen),
        "expires_at": clock.local(hold.expires_at).isoformat(),
        "expires_label": f"{clock.local(hold.expires_at):%H:%M:%S}",
        "remaining": (left := selectors.remaining_seconds(hold, now)),
        "remaining_label": f"{left // 60:02d}:{left % 60:02d}",
        "patient": pii.mask_name(hold.patient.name) if hold.patient else "",
        "channel": hold.channel,
        "insurance": hold.insurance,
    }


def _registration_view(
    reg: Registration,
    *,
    cancel_hours: int,
    now: dt.datetime,
    refund: RegistrationRefund | None = None,
) -> dict:
    deadline = selectors.cancel_deadline(reg, hours=cancel_hours)
    return {
        "refund": {
            "amount": yuan(refund.amount_fen),
            "state": refund.state,
            "state_label": refund.state_label,
            "finished_at": f"{refund.finished_at:%Y年%m月%d日 %H:%M}" if refund.finished_at else "",
        }
        if refund
        else None,
        "id": reg.id,
        "registration_no": reg.registration_no,
        "status": reg.status,
        "status_label": RegistrationStatus(reg.status).label,
        "seq": reg.slot.seq,
        "patient": pii.mask_name(reg.patient.name),
        "session": _session_view(reg.session),
        "window": _window_label(reg.slot.window_start, reg.slot.window_end),
        "checkin_deadline": f"{clock.local(reg.slot.window_start):%m月%d日 %H:%M}",
        "fee": yuan(reg.fee_fen),
        "cancel_deadline": f"{clock.local(deadline):%Y年%m月%d日 %H:%M}",
        "can_cancel": reg.status == RegistrationStatus.BOOKED and now < deadline,
        "cancelled_at": f"{clock.local(reg.cancelled_at):%Y年%m月%d日 %H:%M}"
        if reg.cancelled_at
        else "",
    }


def _refused(request: HttpRequest, exc: GuahaoError) -> HttpResponse:
    return error_page(request, exc, status=exc.status)


# --- 1. a session's time windows -----------------------------------------------------------------


def _session_page(
    request: HttpRequest, session_id: int, *, message: str = "", status: int = 200
) -> HttpResponse:
    session = schedule_selectors.get_session(session_id)
    slots = schedule_selectors.slots_of(session, now=clock.now())
    windows = [
        {
            "start": w.window_start.isoformat(),
            "label": _window_label(w.window_start, w.window_end),
            "free": w.free,
            "total": w.total,
            "bookable": w.slot_id is not None,
            "closed": w.closed,
        }
        for w in slots.windows
    ]
    context = {
        "session": _session_view(session),
        "state": slots.session.status,
        "state_label": slots.session.status_label,
        "release_at": slots.session.release_at,
        "windows": windows,
        "message": message,
        "signed_in": signed_in_account(request) is not None,
        "login_next": "/login?" + urlencode({"next": request.path}),
    }
    return render(request, "web/booking/session.html", context, status=status)


@require_GET
def session_page(request: HttpRequest, session_id: int) -> HttpResponse:
    return _session_page(request, session_id)


@require_POST
@account_required
def create_hold(request: HttpRequest) -> HttpResponse:
    session_id = request.POST.get("session_id", "")
    if not session_id.isdigit():
        return _refused(request, NotFound("排班不存在或已停用", code="session_not_found"))
    try:
        window_start = dt.datetime.fromisoformat(request.POST.get("window_start", ""))
    except ValueError:
        window_start = None
    if window_start is None or window_start.tzinfo is None:
        return _refused(request, InvalidInput("请选择就诊时段", code="slot_required"))
    try:
        # Counted before anything else, refused or not, exactly as POST /api/v1/holds.
        limits.hit("hold_account", request.account.pk, ("hold_ip", client_ip(request)))
        hold = services.hold_slot(
            account=request.account, session_id=int(session_id), window_start=window_start
        )
    except GuahaoError as exc:
        if exc.code in _WINDOW_REFUSALS:
            return _session_page(request, int(session_id), message=exc.message, status=exc.status)
        return _refused(request, exc)
    return HttpResponseRedirect(reverse("web:hold", args=[hold.id]))


# --- 2. the hold: countdown, patient, channel, pay, cancel --------------------------------------


def _hold_page(
    request: HttpRequest, hold: Hold, *, message: str = "", status: int = 200
) -> HttpResponse:
    now = clock.now()
    view = _hold_view(hold, now)
    state = HoldState(view["state"])
    if state in OVER:
        return HttpResponseRedirect(reverse("web:hold-result", args=[hold.id]))
    patients = [_patient_choice(p) for p in patient_selectors.patients_of(request.account)]
    ids = {p["id"] for p in patients}
    just_added = request.GET.get("patient", "")
    chosen = int(just_added) if just_added.isdigit() and int(just_added) in ids else None
    chosen = chosen or (hold.patient_id if hold.patient_id in ids else None)
    chosen = chosen or next((p["id"] for p in patients if p["is_default"]), None)
    if chosen is None and patients:
        chosen = patients[0]["id"]
    channels = offered_channels(hold.session.hospital)
    channel = (
        hold.channel
        if hold.channel in {c for c, _ in channels}
        else (channels[0][0] if channels else "")
    )
    context = {
        "hold": view,
        "now": clock.local(now).isoformat(),
        "live": state in LIVE,
        "paying": state == HoldState.PAYING,
        "patients": patients,
        "chosen_patient": chosen,
        "channels": channels,
        "chosen_channel": channel,
        "message": message,
        "add_patient_url": reverse("web:patient-add") + "?" + urlencode({"next": request.path}),
    }
    return render(request, "web/booking/hold.html", context, status=status)


@require_GET
@account_required
def hold_page(request: HttpRequest, hold_id: int) -> HttpResponse:
    try:
        hold = selectors.get_hold_for_account(account=request.account, hold_id=hold_id)
    except NotFound as exc:
        return _refused(request, exc)
    return _hold_page(request, hold)


@require_POST
@account_required
def pay(request: HttpRequest, hold_id: int) -> HttpResponse:
    """确认并支付: confirm_hold with the chosen patient and channel, then pay_hold, then the
    provider's cashier page, which sends the browser back to the result page."""
    try:
        hold = selectors.get_hold_for_account(account=request.account, hold_id=hold_id)
    except NotFound as exc:
        return _refused(request, exc)
    patient_id = request.POST.get("patient_id", "")
    if not patient_id.isdigit():
        return _hold_page(request, hold, message="请选择就诊人", status=400)
    try:
        services.confirm_hold(
            account=request.account,
            hold_id=hold.id,
            patient_id=int(patient_id),
            channel=request.POST.get("channel", ""),
            insurance=request.POST.get("insurance") == "1",
        )
        payment, params = services.pay_hold(account=request.account, hold_id=hold.id)
    except Conflict as exc:
        if exc.code == "notice_not_acknowledged":
            return HttpResponseRedirect(
                "/notices?" + urlencode({"next": request.path.removesuffix("/pay")})
            )
        hold = selectors.get_hold_for_account(account=request.account, hold_id=hold.id)
        if exc.code in _HOLD_REFUSALS or exc.code == "hold_expired":
            return _hold_page(request, hold, message=exc.message, status=exc.status)
        return _refused(request, exc)
    except GuahaoError as exc:
        if exc.code in _HOLD_REFUSALS:
            hold = selectors.get_hold_for_account(account=request.account, hold_id=hold.id)
            return _hold_page(request, hold, message=exc.message, status=exc.status)
        return _refused(request, exc)
    return HttpResponseRedirect(params.pay_url)


@require_POST
@account_required
def check_payment(request: HttpRequest, hold_id: int) -> HttpResponse:
    """我已支付: ask the provider now; the outcome page says what happened."""
    try:
        hold = services.check_payment(account=request.account, hold_id=hold_id)
    except GuahaoError as exc:
        return _refused(request, exc)
    if selectors.effective_state(hold) in LIVE:
        return _hold_page(
            request, hold, message="暂未查询到支付成功，如已扣款请稍后刷新；也可重新支付。"
        )
    return HttpResponseRedirect(reverse("web:hold-result", args=[hold.id]))


@require_POST
@account_required
def release(request: HttpRequest, hold_id: int) -> HttpResponse:
    """取消锁号, one tap: the slot goes back and the patient back to the session's windows."""
    try:
        hold = services.release_hold(account=request.account, hold_id=hold_id)
    except Conflict as exc:
        hold = selectors.get_hold_for_account(account=request.account, hold_id=hold_id)
        return _hold_page(request, hold, message=exc.message, status=exc.status)
    except GuahaoError as exc:
        return _refused(request, exc)
    return HttpResponseRedirect(reverse("web:session", args=[hold.session_id]))


# --- 3. the outcome ------------------------------------------------------------------------------


@require_GET
@account_required
def hold_result(request: HttpRequest, hold_id: int) -> HttpResponse:
    """Where the cashier sends the patient back: a PAYING hold is asked about at once (as 我已支付),
    so a patient who paid sees the registration without waiting for the provider's notification."""
    try:
        hold = selectors.get_hold_for_account(account=request.account, hold_id=hold_id)
    except NotFound as exc:
        return _refused(request, exc)
    now = clock.now()
    unanswered = False
    if selectors.effective_state(hold, now) == HoldState.PAYING:
        try:
            hold = services.check_payment(account=request.account, hold_id=hold.id)
        except GuahaoError:
            unanswered = True  # the provider did not answer: the page offers 刷新
    state = selectors.effective_state(hold, now)
    if state == HoldState.HELD or (state == HoldState.PAYING and not unanswered):
        return _hold_page(
            request,
            hold,
            message="暂未查询到支付成功，如已扣款请稍后点「我已支付」；也可重新支付。",
        )
    registration = None
    if state == HoldState.SUCCEEDED:
        reg = selectors.get_registration_for_account(
            account=request.account, registration_id=hold.registration.id
        )
        registration = _registration_view(
            reg, cancel_hours=release_rule_for(reg.session).cancel_deadline_hours, now=now
        )
    context = {
        "hold": _hold_view(hold, now),
        "state": state.value,
        "registration": registration,
        "unanswered": unanswered,
        "refund_rule": REFUND_RULE,
        "no_show_rule": NO_SHOW_RULE,
    }
    return render(request, "web/booking/result.html", context)


# --- 4. 我的挂号 ---------------------------------------------------------------------------------


@require_GET
@account_required
def registrations(request: HttpRequest) -> HttpResponse:
    tab = request.GET.get("tab", "pending")
    if tab not in dict(TABS):
        tab = "pending"
    now = clock.now()
    holds: list[dict] = []
    registering: list[dict] = []
    regs: list[dict] = []
    if tab == "pending":
        holds = [
            _hold_view(h, now) for h in selectors.live_holds_of(account=request.account, now=now)
        ]
        # Paid, the HIS not yet answering: shown here until it ends as a registration or a refund.
        registering = [_hold_view(h, now) for h in selectors.registering_holds_of(account=request.account)]
    else:
        found = list(selectors.registrations_of(account=request.account, status=tab))
        hours: dict[int, int] = {}  # one rule lookup per department, not per registration
        for reg in found:
            if reg.session.department_id not in hours:
                hours[reg.session.department_id] = release_rule_for(
                    reg.session
                ).cancel_deadline_hours
        refunds = selectors.refunds_of(found)
        regs = [
            _registration_view(
                r, cancel_hours=hours[r.session.department_id], now=now, refund=refunds.get(r.id)
            )
            for r in found
        ]
    context = {
        "tabs": [{"key": k, "label": label, "active": k == tab} for k, label in TABS],
        "tab": tab,
        "holds": holds,
        "registering": registering,
        "registrations": regs,
        "refund_rule": REFUND_RULE,
        "no_show_rule": NO_SHOW_RULE,
        "message": "已取消挂号，挂号费将原路退回。"
        if request.GET.get("done") == "cancelled"
        else "",
    }
    return render(request, "web/booking/registrations.html", context)


@require_POST
@account_required
def cancel_registration(request: HttpRequest, registration_id: int) -> HttpResponse:
    try:
        reg = services.cancel_registration(account=request.account, registration_id=registration_id)
    except GuahaoError as exc:
        return _refused(request, exc)
    reg = selectors.get_registration_for_account(account=request.account, registration_id=reg.id)
    return HttpResponseRedirect(
        reverse("web:registrations") + "?" + urlencode({"tab": reg.status, "done": "cancelled"})
    )
