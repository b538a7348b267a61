"""Status messages to the patient, one per booking event that a patient should hear about.
Names are masked: a message may be read on a shared phone."""

from __future__ import annotations

from dataclasses import dataclass

from guahao import clock, pii
from guahao.booking.models import Hold, Registration


@dataclass(frozen=True)
class Message:
    account_id: int
    title: str
    text: str


def _when(session) -> str:
    doctor = f" {session.doctor.name}" if session.doctor_id else ""
    return f"{session.date:%m月%d日} {session.get_period_display()} {session.department.name}{doctor}"


def suspension_phrase(reason: str) -> str:
    """"因{reason}停诊，" for any reason staff type: "医生外出会诊" and "医院安排停诊" both read
    once ("因医院安排停诊，" not "因医院安排停诊停诊，"); no reason gives "因医生停诊，"."""
    reason = reason.strip().rstrip("。，,.；;")
    reason = reason.removeprefix("因").strip()
    if not reason:
        return "因医生停诊，"
    return f"因{reason}，" if reason.endswith("停诊") else f"因{reason}停诊，"


def _paid_back_by_hand(refund_id: int | None) -> bool:
    """The refund was paid back another way by staff (Refund.State.MANUAL), not by the provider."""
    from guahao.payments.models import Refund

    return bool(refund_id) and Refund.objects.filter(id=refund_id, state=Refund.State.MANUAL).exists()


def status_message(topic: str, payload: dict) -> Message | None:
    if topic == "registration.booked":
        reg = Registration.objects.select_related("session__department", "session__doctor", "slot", "patient").get(
            id=payload["registration_id"]
        )
        window = f"{clock.local(reg.slot.window_start):%H:%M}-{clock.local(reg.slot.window_end):%H:%M}"
        return Message(
            reg.account_id,
            "预约成功",
            f"就诊人{pii.mask_name(reg.patient.name)}已预约{_when(reg.session)}（{window}，第{reg.slot.seq}号），"
            f"挂号单号{reg.registration_no}。请按时到院取号就诊。",
        )
    if topic in ("registration.refunding", "registration.cancelled"):
        reg = Registration.objects.select_related("session__department", "session__doctor", "patient").get(
            id=payload["registration_id"]
        )
        title = "退费中" if topic == "registration.refunding" else "已取消"
        tail = "挂号费将原路退回。" if topic == "registration.refunding" else "挂号已取消，退款已完成。"
        if topic == "registration.cancelled" and _paid_back_by_hand(payload.get("refund_id")):
            tail = "挂号已取消，挂号费已由医院通过其他方式退还。"
        if reg.cancelled_by:  # staff cancelled for the patient: say so, and why
            return Message(
                reg.account_id,
                title,
                f"医院已为您取消就诊人{pii.mask_name(reg.patient.name)}{_when(reg.session)}的挂号"
                f"（原因：{reg.cancel_reason}）。{tail.removeprefix('挂号已取消，')}",
            )
        why = suspension_phrase(reg.session.suspend_reason) if reg.session.status == "suspended" else ""
        return Message(
            reg.account_id, title, f"{why}就诊人{pii.mask_name(reg.patient.name)}{_when(reg.session)}的{tail}"
        )
    if topic == "refund.failed":
        hold = Hold.objects.select_related("session__hospital").get(payments__refunds__id=payload["refund_id"])
        phone = hold.session.hospital.service_phone
        return Message(
            hold.account_id,
            "退款处理中",
            f"您的挂号费退款未能自动完成，医院将人工处理并原路退回{f'，如有疑问请致电 {phone}' if phone else ''}。",
        )
    if topic in ("hold.failed", "hold.expired"):
        hold = Hold.objects.select_related("session__department", "session__doctor").get(id=payload["hold_id"])
        if topic == "hold.expired" and hold.payment_id is None and not hold.payments.filter(state="paid").exists():
            return None  # an unpaid lock that lapsed is visible on the page; no message needed
        return Message(
            hold.account_id,
            "预约失败",
            f"{_when(hold.session)}的预约未成功，已支付的费用将原路退回。",
        )
    return None
