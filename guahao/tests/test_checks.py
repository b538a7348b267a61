from django.test import override_settings

from guahao.checks import production_settings


def ids(problems) -> set[str]:
    return {p.id for p in problems}


def test_development_conveniences_are_refused_for_production():
    found = ids(production_settings(None))
    assert {"guahao.E003", "guahao.E004"} <= found


@override_settings(
    SECRET_KEY="k" * 50,
    DATA_KEY="00" * 16,
    INDEX_KEY="11" * 16,
    PAYMENT_PROVIDER="wechatpay",
    SMS_CHANNEL="aliyun",
    REALNAME_VERIFIER="gov",
)
def test_a_configured_deployment_passes_the_errors():
    assert not [p for p in production_settings(None) if p.id.startswith("guahao.E")]
