"""The wording of patients' messages: a default per topic, which a hospital may replace in the
console (消息模板). Placeholders are Chinese names in braces; every value is masked before it is
filled in, since a message may be read on a shared phone or a lock screen."""

from __future__ import annotations

import re
from dataclasses import dataclass

from guahao.notifications.models import MessageTemplate, Topic

# Every placeholder a template may use, and what it is. Not every topic fills every one: an
# unknown or empty placeholder renders as nothing.
PLACEHOLDERS: dict[str, str] = {
    "医院": "医院名称",
    "就诊人": "就诊人姓名（已脱敏，如 张*丰）",
    "科室": "科室",
    "医生": "医生姓名（普通号为空）",
    "就诊": "就诊日期、时段、科室与医生，如 11月27日 上午 内科 王医生",
    "就诊日期": "就诊日期，如 11月27日",
    "就诊时间": "就诊时间段，如 11月27日 08:00-08:30",
    "号序": "号序",
    "就诊地点": "就诊地点",
    "挂号单号": "挂号单号",
    "取消说明": "取消的缘由（医院代取消时含原因），患者自己取消时为空",
    "退款说明": "退款的去向",
    "停诊说明": "停诊原因，如 因医生外出会诊停诊，",
    "限制原因": "暂停预约的原因",
    "限制至": "暂停预约的截止日期",
    "客服电话": "医院客服电话",
}

DEFAULTS: dict[str, tuple[str, str]] = {
    Topic.HOLD_FAILED: ("预约失败", "{就诊}的预约未成功，已支付的费用将原路退回。"),
    Topic.BOOKED: (
        "预约成功",
        "就诊人{就诊人}已预约{就诊}（{就诊时间}，第{号序}号），挂号单号{挂号单号}。请按时到院取号就诊。",
    ),
    Topic.REFUNDING: ("退费中", "{取消说明}就诊人{就诊人}{就诊}的挂号已取消，挂号费将原路退回。"),
    Topic.CANCELLED: ("已取消", "{取消说明}就诊人{就诊人}{就诊}的挂号已取消，{退款说明}"),
    Topic.REFUND_FAILED: ("退款处理中", "您的挂号费退款未能自动完成，医院将人工处理并原路退回，如有疑问请致电医院客服{客服电话}。"),
    Topic.REMINDER_DAY_BEFORE: (
        "就诊提醒",
        "就诊人{就诊人}明天{就诊时间}在{医院}{科室}就诊（第{号序}号，{就诊地点}），请提前到院取号；如不能就诊，请及时取消。",
    ),
    Topic.REMINDER_SOON: (
        "就诊提醒",
        "就诊人{就诊人}今天{就诊时间}在{医院}{科室}就诊（第{号序}号，{就诊地点}），请按时到院取号。",
    ),
    Topic.SUSPENDED: (
        "停诊通知",
        "{停诊说明}就诊人{就诊人}{就诊}的挂号已取消，挂号费将全额原路退回，如需就诊请重新预约。",
    ),
    Topic.NO_SHOW: (
        "爽约记录",
        "就诊人{就诊人}{就诊}的挂号未按时取号就诊，已记爽约一次。爽约次数过多将被暂停预约。",
    ),
    Topic.BAN_APPLIED: ("暂停预约", "就诊人{就诊人}因{限制原因}，在{医院}暂停预约至{限制至}。"),
    Topic.BAN_LIFTED: ("恢复预约", "就诊人{就诊人}在{医院}的预约限制已解除，可以正常预约挂号。"),
}

_PLACEHOLDER = re.compile(r"\{([^{}]{1,10})\}")


@dataclass(frozen=True)
class Wording:
    title: str
    body: str


def wording(*, hospital_id: int | None, topic: str) -> Wording:
    """The hospital's own template for the topic, else the default."""
    if hospital_id is not None:
        own = MessageTemplate.objects.filter(hospital_id=hospital_id, topic=topic).values_list("title", "body").first()
        if own is not None:
            return Wording(*own)
    return Wording(*DEFAULTS[topic])


def fill(text: str, variables: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1), ""), text)


def unknown_placeholders(text: str) -> list[str]:
    """Placeholders the console should refuse: a typo would silently render as nothing."""
    return [name for name in _PLACEHOLDER.findall(text) if name not in PLACEHOLDERS]
