"""`guahao check --deploy`: a warning about SQLite and an error for a payment channel no merchant
account can take; what production must not start with is refused at start instead
(test_environment.py)."""

from guahao.checks import sqlite_beyond_one_machine


def test_sqlite_is_flagged_for_a_look_before_deploying(settings):
    if not settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        assert sqlite_beyond_one_machine(None) == []
        return
    assert [w.id for w in sqlite_beyond_one_machine(None)] == ["guahao.W002"]


def _production(monkeypatch) -> None:
    import guahao.environment

    monkeypatch.setattr(guahao.environment, "is_development", lambda: False)


def test_a_channel_without_an_enabled_merchant_account_fails_the_deploy_check(db, monkeypatch):
    from guahao.checks import payment_channels_have_merchants
    from guahao.testing import make_hospital

    hospital = make_hospital(name="测试人民医院")
    assert payment_channels_have_merchants(None) == []  # development: the sandbox takes the money
    _production(monkeypatch)
    errors = payment_channels_have_merchants(None)
    assert {e.id for e in errors} == {"guahao.E010"}
    messages = [e.msg for e in errors]
    assert f"{hospital.name}：开通了微信支付，但没有启用的商户号（控制台：支付商户号）" in messages
    assert f"{hospital.name}：开通了支付宝，但没有启用的商户号（控制台：支付商户号）" in messages


def test_the_platforms_merchant_account_covers_every_hospital(db, monkeypatch):
    from guahao.checks import payment_channels_have_merchants
    from guahao.payments.models import MerchantAccount
    from guahao.testing import make_hospital

    make_hospital(name="测试人民医院")
    for provider in ("wechatpay", "alipay"):
        MerchantAccount.objects.create(
            provider=provider, app_id="app", mch_id="m", private_key="k", provider_public_key="p"
        )
    _production(monkeypatch)
    assert payment_channels_have_merchants(None) == []
    MerchantAccount.objects.filter(provider="alipay").update(enabled=False)
    assert [e.msg for e in payment_channels_have_merchants(None)] == [
        "测试人民医院：开通了支付宝，但没有启用的商户号（控制台：支付商户号）"
    ]


def test_a_hospital_that_turned_on_messages_it_cannot_send_fails_the_deploy_check(db, settings):
    from guahao.checks import message_channels_can_send
    from guahao.notifications.models import MessagingSettings
    from guahao.testing import make_hospital
    from guahao.wechat.models import OfficialAccount

    hospital = make_hospital(name="测试人民医院")
    chosen = MessagingSettings.objects.create(hospital=hospital)
    assert message_channels_can_send(None) == []  # the in-app list only: nothing to configure
    MessagingSettings.objects.filter(id=chosen.id).update(sms_enabled=True, wechat_enabled=True)
    settings.MESSAGE_CHANNELS, settings.SMS_ACCESS_KEY_ID, settings.SMS_ACCESS_KEY_SECRET, settings.SMS_SIGN_NAME = (
        ["wechat", "sms"], "", "", ""
    )
    messages = [e.msg for e in message_channels_can_send(None)]
    assert [m.split("，")[0] for m in messages] == [
        "测试人民医院：开通了短信消息", "测试人民医院：开通了短信消息", "测试人民医院：开通了公众号模板消息",
    ]
    settings.SMS_ACCESS_KEY_ID, settings.SMS_ACCESS_KEY_SECRET = "LTAI5tKey", "secret-of-the-key"
    MessagingSettings.objects.filter(id=chosen.id).update(sms_sign_name="测试医院")
    OfficialAccount.objects.create(hospital=hospital, app_id="wx1234567890abcdef", app_secret="s" * 32, enabled=True)
    assert message_channels_can_send(None) == []
