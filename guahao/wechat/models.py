from __future__ import annotations

from django.db import models

from guahao.fields import EncryptedTextField
from guahao.notifications.models import Topic


class OfficialAccount(models.Model):
    """A hospital's 公众号 (服务号): its AppID and AppSecret from 微信公众平台 → 设置与开发 → 基本配置.
    The secret is encrypted at rest and never shown back in the console."""

    hospital = models.OneToOneField(
        "catalog.Hospital", on_delete=models.CASCADE, related_name="wechat_account", verbose_name="医院"
    )
    app_id = models.CharField("AppID", max_length=32, unique=True, help_text="开发者ID（AppID），wx 开头")
    app_secret = EncryptedTextField("AppSecret")
    api_base = models.URLField(
        "接口地址", max_length=200, default="https://api.weixin.qq.com", help_text="仅开发与联调时改为模拟器地址"
    )
    oauth_base = models.URLField(
        "网页授权地址", max_length=200, default="https://open.weixin.qq.com", help_text="仅开发与联调时改为模拟器地址"
    )
    enabled = models.BooleanField("启用", default=True, help_text="停用后不再做网页授权登录，也不发模板消息")
    updated_at = models.DateTimeField("更新时间", auto_now=True)

    class Meta:
        verbose_name = verbose_name_plural = "公众号"

    def __str__(self) -> str:
        return f"{self.hospital} · {self.app_id}"


class WechatTemplate(models.Model):
    """Which 模板消息 template a topic goes out with, and how its fields are filled: `data` maps a
    template field (thing1, time2 …) to text with placeholders such as {科室}, filled from the
    message's masked variables (guahao.notifications.templates.PLACEHOLDERS, plus {标题} and {内容})."""

    official_account = models.ForeignKey(
        OfficialAccount, on_delete=models.CASCADE, related_name="templates", verbose_name="公众号"
    )
    topic = models.CharField("消息类型", max_length=40, choices=Topic.choices)
    template_id = models.CharField("模板ID", max_length=64)
    data = models.JSONField(
        "字段映射", default=dict, help_text='如 {"thing1": "{科室}", "time2": "{就诊时间}", "character_string3": "{挂号单号}"}'
    )

    class Meta:
        verbose_name = verbose_name_plural = "公众号模板消息"
        constraints = [
            models.UniqueConstraint(fields=["official_account", "topic"], name="one_wechat_template_per_topic")
        ]

    def __str__(self) -> str:
        return f"{self.get_topic_display()} → {self.template_id}"


class WechatBinding(models.Model):
    """An account's openid under one 公众号 (openids differ per AppID). Made once, after an SMS
    sign-in inside WeChat; one openid per account and one account per openid, per AppID."""

    app_id = models.CharField("AppID", max_length=32)
    openid = models.CharField("OpenID", max_length=64)
    account = models.ForeignKey(
        "patients.Account", on_delete=models.CASCADE, related_name="wechat_bindings", verbose_name="账号"
    )
    bound_at = models.DateTimeField("绑定时间")

    class Meta:
        verbose_name = verbose_name_plural = "微信绑定"
        constraints = [
            models.UniqueConstraint(fields=["app_id", "openid"], name="one_account_per_openid"),
            models.UniqueConstraint(fields=["app_id", "account"], name="one_openid_per_account"),
        ]

    def __str__(self) -> str:
        return f"{self.app_id} · {self.openid[:6]}****"


class AccessToken(models.Model):
    """The 公众号's access_token, shared by every process (WeChat invalidates the old token when a
    new one is fetched, so no process may keep its own). `version` grows with each refresh; a
    refresh is claimed by compare-and-set on (version, refreshing_until), so one process fetches."""

    app_id = models.CharField(max_length=32, unique=True)
    token = EncryptedTextField(blank=True)
    expires_at = models.DateTimeField()
    version = models.PositiveIntegerField(default=0)
    refreshing_until = models.DateTimeField(null=True, blank=True)
    refresher = models.CharField(max_length=32, blank=True)

    def __str__(self) -> str:
        return f"access_token {self.app_id} v{self.version}"
