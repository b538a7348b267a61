"""The development 公众号: the demo hospital's OfficialAccount pointed at the WeChat simulator, with a
template for each demo topic (the simulator's DEMO_TEMPLATES) and 公众号 messages turned on."""

from __future__ import annotations

from guahao.catalog.models import Hospital
from guahao.notifications.models import MessagingSettings, Topic
from guahao.wechat.models import OfficialAccount, WechatTemplate
from guahao.wechat.simulator import DEMO_APP_ID, DEMO_APP_SECRET, DEMO_TEMPLATES

_BOOKED, _REMIND, _CANCEL = DEMO_TEMPLATES
DEMO_MAPPINGS: dict[str, tuple[str, dict[str, str]]] = {
    Topic.BOOKED: (_BOOKED, {"thing1": "{就诊人}", "thing2": "{科室}", "time3": "{就诊时间}", "character_string4": "{挂号单号}"}),
    Topic.REMINDER_DAY_BEFORE: (_REMIND, {"thing1": "{就诊人}", "thing2": "{科室}", "time3": "{就诊时间}", "thing4": "{就诊地点}"}),
    Topic.REMINDER_SOON: (_REMIND, {"thing1": "{就诊人}", "thing2": "{科室}", "time3": "{就诊时间}", "thing4": "{就诊地点}"}),
    Topic.REFUNDING: (_CANCEL, {"thing1": "{就诊人}", "thing2": "{就诊}", "thing3": "挂号费将原路退回"}),
    Topic.CANCELLED: (_CANCEL, {"thing1": "{就诊人}", "thing2": "{就诊}", "thing3": "{退款说明}"}),
    Topic.SUSPENDED: (_CANCEL, {"thing1": "{就诊人}", "thing2": "{就诊}", "thing3": "医生停诊，挂号费全额退回"}),
}


def configure_demo_account(hospital: Hospital, *, base_url: str) -> OfficialAccount:
    """Idempotent: run at every demo start; `base_url` is the simulator's address."""
    official, _ = OfficialAccount.objects.update_or_create(
        hospital=hospital,
        defaults={"app_id": DEMO_APP_ID, "app_secret": DEMO_APP_SECRET, "api_base": base_url, "oauth_base": base_url, "enabled": True},
    )
    for topic, (template_id, data) in DEMO_MAPPINGS.items():
        WechatTemplate.objects.update_or_create(official_account=official, topic=topic, defaults={"template_id": template_id, "data": data})
    settings, _ = MessagingSettings.objects.get_or_create(hospital=hospital)
    if not settings.wechat_enabled:
        MessagingSettings.objects.filter(pk=settings.pk).update(wechat_enabled=True)
    return official
