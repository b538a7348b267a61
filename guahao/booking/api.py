"""Holds and registrations over HTTP. Parse, authorise, call a service, render: nothing more."""

from __future__ import annotations

import datetime as dt

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status

from guahao import clock, metrics, pii
from guahao.booking import selectors, services
from guahao.booking.models import Hold, Registration
from guahao.booking.states import HoldState, RegistrationStatus
from guahao.catalog.selectors import get_hospital, payment_channels_of
from guahao.errors import GuahaoError
from guahao.limits import services as limits
from guahao.limits.clientip import client_ip
from guahao.patients.auth import bearer
from guahao.payments.channels import PaymentChannel
from guahao.scheduling.selectors import release_rule_for

router = Router(auth=bearer, tags=["挂号"])


class SlotOut(Schema):
    id: int
    seq: int
    window_start: dt.datetime
    window_end: dt.datetime


# Not "SessionOut": the schedule's SessionOut has that name in the published schema, and two
# schemas of one name would be published as one.
class BookedSessionOut(Schema):
    id: int
    date: dt.date
    period: str
    period_label: str
    department_id: int
    department_name: str
    doctor_id: int | None
    doctor_name: str | None
    doctor_title: str | None
    location: str
    hospital_name: str
    service_phone: str


class PatientBrief(Schema):
    id: int
    name: str = Field(description="脱敏姓名")


class PaymentChannelOut(Schema):
    code: str
    label: str


class HoldOut(Schema):
    id: int
    state: HoldState
    state_label: str
    slot: SlotOut
    session: BookedSessionOut
    fee_fen: int
    expires_at: dt.datetime
    remaining_seconds: int
    patient: PatientBrief | None
    channel: str
    insurance: bool
    payment_channels: list[PaymentChannelOut] = Field(description="本院提供的支付方式（确认时从中选择）")
    registration_id: int | None


class HoldIn(Schema):
    slot_id: int | None = Field(None, description="指定号源；或提供 session_id 与 window_start 取该时段第一个空号")
    session_id: int | None = None
    window_start: dt.datetime | None = None


class ConfirmIn(Schema):
    patient_id: int
    channel: Hold.Channel
    insurance: bool = False


class PayOut(Schema):
    payment_id: int
    out_trade_no: str
    amount_fen: int
    # The provider's page to open (WeChat H5 pay, Alipay mobile web pay); for WeChat JSAPI inside
    # WeChat, `params` are getBrandWCPayRequest's signed parameters instead.
    pay_url: str
    params: dict
    expires_at: dt.datetime


class RefundOut(Schema):
    amount_fen: int
    state: str = Field(description="processing 退款中 / succeeded 已退款 / failed 医院人工处理中")
    state_label: str
    reason: str
    requested_at: dt.datetime
    finished_at: dt.datetime | None = Field(description="退款完成时间；未完成为 null")


class DepartmentBriefOut(Schema):
    id: int
    name: str


class RecentDoctorOut(Schema):
    id: int
    name: str
    title: str
    title_label: str
    specialty: str
    hospital_id: int
    department: DepartmentBriefOut
    last_booked_at: dt.datetime = Field(description="最近一次预约该医生的时间")

    @staticmethod
    def resolve_title_label(obj) -> str:
        return obj.get_title_display()

    @staticmethod
    def resolve_last_booked_at(obj) -> dt.datetime:
        return clock.local(obj.last_booked_at)


class RegistrationOut(Schema):
    id: int
    registration_no: str
    status: RegistrationStatus
    status_label: str
    patient: PatientBrief
    slot: SlotOut
    session: BookedSessionOut
    fee_fen: int
    booked_at: dt.datetime
    cancelled_at: dt.datetime | None
    cancel_deadline: dt.datetime
    can_cancel: bool
    refund: RefundOut | None = Field(description="取消或停诊后的退款；没有退款时为 null")


def _session_out(session) -> dict:
    doctor = session.doctor
    return {
        "id": session.id,
        "date": session.date,
        "period": session.period,
        "period_label": session.get_period_display(),
        "department_id": session.department_id,
        "department_name": session.department.name,
        "doctor_id": doctor.id if doctor else None,
        "doctor_name": doctor.name if doctor else None,
        "doctor_title": doctor.get_title_display() if doctor else None,
        "location": session.location or session.department.location,
        "hospital_name": session.hospital.name,
        "service_phone": session.hospital.service_phone,
    }


def _slot_out(slot) -> dict:
    return {
        "id": slot.id,
        "seq": slot.seq,
        "window_start": clock.local(slot.window_start),
        "window_end": clock.local(slot.window_end),
    }


def _hold_out(hold: Hold) -> dict:
    now = clock.now()
    state = selectors.effective_state(hold, now)
    registration = (
        Registration.objects.filter(hold_id=hold.id).values_list("id", flat=True).first()
        if state == HoldState.SUCCEEDED
        else None
    )
    return {
        "id": hold.id,
        "state": state,
        "state_label": state.label,
        "slot": _slot_out(hold.slot),
        "session": _session_out(hold.session),
        "fee_fen": hold.fee_fen,
        "expires_at": clock.local(hold.expires_at),
        "remaining_seconds": selectors.remaining_seconds(hold, now),
        "patient": {"id": hold.patient.id, "name": pii.mask_name(hold.patient.name)} if hold.patient else None,
        "channel": hold.channel,
        "insurance": hold.insurance,
        "payment_channels": [
            {"code": c, "label": PaymentChannel(c).label} for c in payment_channels_of(hold.session.hospital)
        ],
        "registration_id": registration,
    }


def _registration_out(
    reg: Registration, *, cancel_hours: int | None = None, refund: selectors.RegistrationRefund | None = None
) -> dict:
    if cancel_hours is None:
        cancel_hours = release_rule_for(reg.session).cancel_deadline_hours
    deadline = selectors.cancel_deadline(reg, hours=cancel_hours)
    return {
        "id": reg.id,
        "registration_no": reg.registration_no,
        "status": reg.status,
        "status_label": RegistrationStatus(reg.status).label,
        "patient": {"id": reg.patient.id, "name": pii.mask_name(reg.patient.name)},
        "slot": _slot_out(reg.slot),
        "session": _session_out(reg.session),
        "fee_fen": reg.fee_fen,
        "booked_at": clock.local(reg.booked_at),
        "cancelled_at": clock.local(reg.cancelled_at) if reg.cancelled_at else None,
        "cancel_deadline": clock.local(deadline),
        "can_cancel": reg.status == RegistrationStatus.BOOKED and clock.now() < deadline,
        "refund": refund,
    }


@router.post("/holds", response={201: HoldOut}, summary="锁号")
def create_hold(request: HttpRequest, body: HoldIn):
    # Counted before anything else, refused or not: a bot's failed tries cost it as much as wins.
    try:
        limits.hit("hold_account", request.auth.pk, ("hold_ip", client_ip(request)))
        hold = services.hold_slot(
            account=request.auth, slot_id=body.slot_id, session_id=body.session_id, window_start=body.window_start
        )
    except GuahaoError as exc:
        metrics.count_hold(exc.code)
        raise
    metrics.count_hold("granted")
    return Status(201, _hold_out(hold))


@router.get("/holds", response=list[HoldOut], summary="我的锁号（待支付，含倒计时）")
def list_holds(request: HttpRequest):
    """锁号中或支付中、尚未超时的锁号，最先超时的在前。"""
    return [_hold_out(hold) for hold in selectors.live_holds_of(account=request.auth)]


@router.get("/holds/{hold_id}", response=HoldOut, summary="锁号详情（含倒计时）")
def get_hold(request: HttpRequest, hold_id: int):
    return _hold_out(selectors.get_hold_for_account(account=request.auth, hold_id=hold_id))


@router.post("/holds/{hold_id}/confirm", response=HoldOut, summary="确认就诊人与支付方式")
def confirm_hold(request: HttpRequest, hold_id: int, body: ConfirmIn):
    hold = services.confirm_hold(
        account=request.auth, hold_id=hold_id, patient_id=body.patient_id, channel=body.channel, insurance=body.insurance
    )
    return _hold_out(hold)


@router.post("/holds/{hold_id}/pay", response=PayOut, summary="发起支付（支付失败可在锁号期内重试）")
def pay_hold(request: HttpRequest, hold_id: int):
    payment, params = services.pay_hold(account=request.auth, hold_id=hold_id)
    hold = selectors.get_hold_for_account(account=request.auth, hold_id=hold_id)
    return {
        "payment_id": payment.id,
        "out_trade_no": payment.out_trade_no,
        "amount_fen": payment.amount_fen,
        "pay_url": params.pay_url,
        "params": params.params,
        "expires_at": clock.local(hold.expires_at),
    }


@router.post("/holds/{hold_id}/pay/check", response=HoldOut, summary="我已支付：立即向支付机构查询支付结果")
def check_payment(request: HttpRequest, hold_id: int):
    return _hold_out(services.check_payment(account=request.auth, hold_id=hold_id))


@router.delete("/holds/{hold_id}", response=HoldOut, summary="取消锁号")
def release_hold(request: HttpRequest, hold_id: int):
    return _hold_out(services.release_hold(account=request.auth, hold_id=hold_id))


@router.get("/registrations", response=list[RegistrationOut], summary="我的挂号")
def list_registrations(request: HttpRequest, status: RegistrationStatus | None = None):
    registrations = list(selectors.registrations_of(account=request.auth, status=status))
    hours: dict[int, int] = {}  # one rule lookup per department, not per registration
    for reg in registrations:
        if reg.session.department_id not in hours:
            hours[reg.session.department_id] = release_rule_for(reg.session).cancel_deadline_hours
    refunds = selectors.refunds_of(registrations)
    return [
        _registration_out(r, cancel_hours=hours[r.session.department_id], refund=refunds.get(r.id))
        for r in registrations
    ]


def _one_registration(account, registration_id: int) -> dict:
    reg = selectors.get_registration_for_account(account=account, registration_id=registration_id)
    return _registration_out(reg, refund=selectors.refund_of(reg))


@router.get("/registrations/{registration_id}", response=RegistrationOut, summary="挂号详情")
def get_registration(request: HttpRequest, registration_id: int):
    return _one_registration(request.auth, registration_id)


@router.post("/registrations/{registration_id}/cancel", response=RegistrationOut, summary="取消挂号（退费）")
def cancel_registration(request: HttpRequest, registration_id: int):
    reg = services.cancel_registration(account=request.auth, registration_id=registration_id)
    return _one_registration(request.auth, reg.id)


@router.get("/doctors/recent", response=list[RecentDoctorOut], summary="看过的医生（复诊）")
def recent_doctors(request: HttpRequest, hospital_id: int | None = Query(None, description="只看这家医院的")):
    """本账号挂过号（未取消）的医生，最近预约的在前，最多 10 位。"""
    hospital = get_hospital(hospital_id) if hospital_id is not None else None
    return selectors.recent_doctors(request.auth, hospital=hospital)
