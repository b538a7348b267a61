"""Our template placeholders (guahao.notifications.templates.PLACEHOLDERS, Chinese names) as the
variables of SMS templates. Aliyun's template variables are ASCII names (${name}), so a hospital's
SMS template approved in the Aliyun console uses the names on the right, e.g.

    您好，${name}已预约${hospital}${dept}${time}就诊，挂号单号${no}，请按时到院取号。

This table is the one place that mapping lives; docs/messages.md shows it to the hospital's staff.
"""

from __future__ import annotations

from collections.abc import Mapping

SMS_VARIABLES: dict[str, str] = {
    "医院": "hospital",
    "就诊人": "name",
    "科室": "dept",
    "医生": "doctor",
    "就诊": "visit",
    "就诊日期": "date",
    "就诊时间": "time",
    "号序": "seq",
    "就诊地点": "place",
    "挂号单号": "no",
    "取消说明": "cancel_note",
    "退款说明": "refund_note",
    "停诊说明": "suspend_note",
    "限制原因": "reason",
    "限制至": "until",
    "客服电话": "phone",
}


def template_param(params: Mapping[str, object]) -> dict[str, str]:
    """A message's (already masked) variables as SendSms's TemplateParam. Empty values are left
    out: Aliyun refuses an empty variable, so a template should use only what its topic always fills."""
    return {
        SMS_VARIABLES[name]: str(value)
        for name, value in params.items()
        if name in SMS_VARIABLES and value not in (None, "")
    }
