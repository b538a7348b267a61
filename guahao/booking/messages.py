"""What a patient is told about their booking: for each booking event, the message's topic,
recipient and (masked) template variables. The wording lives in notifications.templates."""

from __future__ import annotations

from guahao import clock, pii
from guahao.booking.models import Hold, Registration
from guahao.notifications.messaging import Composed
from guahao.notifications.models import Topic


def suspension_phrase(reason: str) -> str:
    """"因{reason}停诊，" for any reason staff type: "医生外出会诊" and "医院安排停诊" both read
    once ("因医院安排停诊，" not "因医院安排停诊停诊，"); no reason gives "因医生停诊，"."""
    reason = reason.strip().rstrip("。，,.；;")
    reason = reason.removeprefix("因").strip()
    if not reason:
        return "因医生停诊，"
    return f"因{reason}，" if reason.endswith("停诊") else f"因{reason}停诊，"


def session_variables(session) -> dict[str, str]:
    doctor = session.doctor.name if session.doctor_id else ""
    when = f"{session.date:%m月%d日} {session.get_period_display()} {session.department.name}"
    hospital = session.hospital
    return {
        "医院": hospital.short_name or hospital.name,
        "科室": session.department.name,
        "医生": doctor,
        "就诊": f"{when} {doctor}" if doctor else when,
        "就诊日期": f"{session.date:%m月%d日}",
        "就诊地点": session.location or session.department.location or "",
        "客服电话": hospital.service_phone or "",
    }


def registration_variables(reg: Registration) -> dict[str, str]:
    slot = reg.slot
    window = f"{clock.local(slot.window_start):%H:%M}-{clock.local(slot.window_end):%H:%M}"
    return {
        **session_variables(reg.session),
        "就诊人": pii.mask_name(reg.patient.name),
        "就诊时间": f"{reg.session.date:%m月%d日} {window}",
        "号序": str(slot.seq),
        "挂号单号": reg.registration_no,
    }


def _registration(registration_id: int) -> Registration:
    return Registration.objects.select_related(
        "session__department", "session__doctor", "session__hospital", "slot", "patient"
    ).get(id=registration_id)


def _link(reg: Registration) -> str:
    return "/me/registrations"


def _paid_back_by_hand(refund_id: int | None) -> bool:
    """The refund was paid back another way by staff (Refund.State.MANUAL), not by the provider."""
    from guahao.payments.models import Refund

    return bool(refund_id) and Refund.objects.filter(id=refund_id, state=Refund.State.MANUAL).exists()


def _cancelled(topic: str, payload: dict) -> Composed:
    reg = _registration(payload["registration_id"])
    variables = registration_variables(reg)
    message_topic = Topic.REFUNDING if topic == "registration.refunding" else Topic.CANCELLED
    if reg.cancelled_by:  # staff cancelled for the patient: say so, and why
        variables["取消说明"] = f"医院已为您取消挂号（原因：{reg.cancel_reason}）。"
    elif reg.session.status == "suspended":
        variables["停诊说明"] = variables["取消说明"] = suspension_phrase(reg.session.suspend_reason)
        if topic == "registration.refunding":
            message_topic = Topic.SUSPENDED  # the 停诊 notice
    paid_by_hand = topic == "registration.cancelled" and _paid_back_by_hand(payload.get("refund_id"))
    variables["退款说明"] = "挂号费已由医院通过其他方式退还。" if paid_by_hand else "退款已完成。"
    return Composed(reg.account_id, reg.session.hospital_id, message_topic, variables, _link(reg))


def compose(topic: str, payload: dict) -> Composed | None:
    """The message for a booking event, or None when the patient need not hear of it."""
    if topic == "registration.booked":
        reg = _registration(payload["registration_id"])
        return Composed(reg.account_id, reg.session.hospital_id, Topic.BOOKED, registration_variables(reg), _link(reg))
    if topic in ("registration.refunding", "registration.cancelled"):
        return _cancelled(topic, payload)
    if topic == "registration.no_show":
        reg = _registration(payload["registration_id"])
        return Composed(reg.account_id, reg.session.hospital_id, Topic.NO_SHOW, registration_variables(reg), _link(reg))
    if topic in ("reminder.day_before", "reminder.soon"):
        reg = _registration(payload["registration_id"])
        if reg.status != "booked":  # cancelled since the reminder was due
            return None
        return Composed(reg.account_id, reg.session.hospital_id, topic, registration_variables(reg), _link(reg))
    if topic == "refund.failed":
        hold = Hold.objects.select_related("session__hospital", "session__department", "session__doctor").get(
            payments__refunds__id=payload["refund_id"]
        )
        return Composed(hold.account_id, hold.session.hospital_id, Topic.REFUND_FAILED, session_variables(hold.session), "")
    if topic in ("hold.failed", "hold.expired"):
        hold = Hold.objects.select_related("session__department", "session__doctor", "session__hospital").get(
            id=payload["hold_id"]
        )
        if topic == "hold.expired" and hold.payment_id is None and not hold.payments.filter(state="paid").exists():
            return None  # an unpaid lock that lapsed is visible on the page; no message needed
        if topic == "hold.failed" and not hold.payments.filter(state="paid").exists():
            return None  # the patient saw the refusal on the page at once; nothing was paid
        return Composed(hold.account_id, hold.session.hospital_id, Topic.HOLD_FAILED, session_variables(hold.session), "")
    return None
