from django.apps import AppConfig


class WechatConfig(AppConfig):
    name = "guahao.wechat"
    label = "wechat"
    verbose_name = "微信公众号"
