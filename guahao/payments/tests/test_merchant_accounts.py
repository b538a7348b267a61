"""Merchant accounts (支付商户号) in the console: a hospital's own WeChat Pay or Alipay account, or the
platform's as fallback; keys typed once, stored encrypted and never shown back; a half key refused
at the form; an account switched off takes no new payments but still refunds the ones it took; and
the 测试商户号 action proves keys and route against the provider (here the sandbox gateway)."""

from __future__ import annotations

import secrets
import string

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.messages import get_messages
from django.db import connection

from guahao.booking import services as booking
from guahao.booking.models import Registration
from guahao.booking.states import RegistrationStatus
from guahao.booking.tests import conftest as booking_fixtures
from guahao.catalog.models import Hospital
from guahao.console import roles
from guahao.console.models import AuditEntry
from guahao.console.testing import console_client, make_staff, superuser_client
from guahao.ledger import find_violations
from guahao.payments.models import MerchantAccount, Payment, Refund
from guahao.payments.providers import SANDBOX, merchant_for
from guahao.testing import (
    api_client,
    make_account,
    make_hospital,
    open_pay_page,
    pay_at_provider,
    payment_sandbox,
    run_worker,
)

world = booking_fixtures.world
booker = booking_fixtures.booker

pytestmark = pytest.mark.django_db

ACCOUNTS = "/admin/payments/merchantaccount/"
ADD = f"{ACCOUNTS}add/"


def key_pair() -> tuple[str, str]:
    """(PKCS8 private PEM, public PEM) of a fresh RSA-2048 key, as a merchant platform issues them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def api_v3_key() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


def wechat_form(hospital: Hospital | None, **fields: str) -> dict[str, str]:
    private, _ = key_pair()
    _, platform_public = key_pair()
    return {
        "hospital": str(hospital.pk) if hospital else "",
        "provider": "wechatpay",
        "enabled": "on",
        "app_id": "wx8888888888888888",
        "mch_id": "1900000109",
        "serial_no": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        "provider_public_key_id": "PUB_KEY_ID_0114232134912410000000000000",
        "new_private_key": private,
        "new_api_v3_key": api_v3_key(),
        "provider_public_key": platform_public,
        "gateway_url": "",
        **fields,
    }


def alipay_form(hospital: Hospital | None, **fields: str) -> dict[str, str]:
    private, _ = key_pair()
    _, alipay_public = key_pair()
    return {
        "hospital": str(hospital.pk) if hospital else "",
        "provider": "alipay",
        "enabled": "on",
        "app_id": "2021000000000001",
        "mch_id": "2088000000000001",
        "serial_no": "",
        "provider_public_key_id": "",
        "new_private_key": private,
        "new_api_v3_key": "",
        "provider_public_key": alipay_public,
        "gateway_url": "",
        **fields,
    }


def raw_secrets(account: MerchantAccount) -> tuple[str, str]:
    """The private key and APIv3 key columns as the database holds them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT private_key, api_v3_key FROM payments_merchantaccount WHERE id = %s",
            [account.pk],
        )
        return cursor.fetchone()


def sandbox_account(provider: str, *, hospital: Hospital | None, **fields) -> MerchantAccount:
    """A merchant account as staff would enter one for joint testing: the sandbox gateway's keys
    and address."""
    keys, gateway = payment_sandbox().keys, payment_sandbox()
    if provider == "wechatpay":
        values = dict(
            app_id=keys.wechat.appid, mch_id=keys.wechat.mchid, serial_no=keys.wechat.merchant_serial_no,
            private_key=keys.wechat.merchant_private_key, provider_public_key=keys.wechat.platform_public_key,
            provider_public_key_id=keys.wechat.platform_public_key_id, api_v3_key=keys.wechat.apiv3_key,
            gateway_url=gateway.wechat_base,
        )  # fmt: skip
    else:
        values = dict(
            app_id=keys.alipay.app_id, mch_id=keys.alipay.seller_id, private_key=keys.alipay.app_private_key,
            provider_public_key=keys.alipay.alipay_public_key, gateway_url=gateway.alipay_gateway,
        )  # fmt: skip
    return MerchantAccount.objects.create(
        hospital=hospital, provider=provider, **{**values, **fields}
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- entering accounts -----------------------------------------------------------------------------


@pytest.mark.parametrize("form", [wechat_form, alipay_form], ids=["wechatpay", "alipay"])
def test_a_hospitals_account_is_added_with_its_keys_stored_encrypted_and_never_shown_back(form):
    hospital = make_hospital()
    admin = make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital])
    client = console_client(admin)
    data = form(hospital)

    response = client.post(ADD, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    account = MerchantAccount.objects.get()
    assert (account.hospital, account.provider, account.mch_id) == (
        hospital,
        data["provider"],
        data["mch_id"],
    )
    assert account.private_key == data["new_private_key"].strip()
    assert account.api_v3_key == data["new_api_v3_key"]

    # At rest: ciphertext, not the PEM nor the APIv3 key.
    private_raw, v3_raw = raw_secrets(account)
    assert (
        "PRIVATE KEY" not in private_raw
        and data["new_private_key"].splitlines()[1] not in private_raw
    )
    assert not data["new_api_v3_key"] or data["new_api_v3_key"] not in v3_raw

    # Never shown back: the change page says the keys are set, and nothing more.
    page = client.get(f"{ACCOUNTS}{account.pk}/change/").content.decode()
    assert "已设置" in page
    for line in data["new_private_key"].splitlines()[1:-1]:
        assert line not in page
    assert not data["new_api_v3_key"] or data["new_api_v3_key"] not in page
    # The audit log records that keys were entered, never the keys.
    entry = AuditEntry.objects.get(action=AuditEntry.Action.ADD)
    assert entry.after["new_private_key"] == "******"
    assert data["new_private_key"].splitlines()[1] not in str(entry.after)

    # Saving again with the key fields left empty keeps the stored keys.
    kept = {
        **data,
        "new_private_key": "",
        "new_api_v3_key": "",
        "app_id": data["app_id"][:-1] + "9",
    }
    (
        kept.pop("hospital"),
        kept.pop("provider"),
    )  # read only once saved: refunds go through the account
    assert client.post(f"{ACCOUNTS}{account.pk}/change/", kept).status_code == 302
    account.refresh_from_db()
    assert account.app_id.endswith("9") and account.private_key == data["new_private_key"].strip()
    assert account.api_v3_key == data["new_api_v3_key"]


@pytest.mark.parametrize(
    ("form", "field", "change", "message"),
    [
        (wechat_form, "new_private_key", lambda d: d["new_private_key"][: len(d["new_private_key"]) // 2], "商户私钥无法解析，请粘贴完整的 PEM 内容（含首尾行）"),
        (alipay_form, "new_private_key", lambda d: d["new_private_key"][: len(d["new_private_key"]) // 2], "商户私钥无法解析，请粘贴完整的 PEM 内容（含首尾行）"),
        (wechat_form, "provider_public_key", lambda d: d["provider_public_key"][:200], "支付机构公钥无法解析，请粘贴完整的 PEM 内容（含首尾行）"),
        (wechat_form, "new_api_v3_key", lambda d: d["new_api_v3_key"][:16], "APIv3 密钥应为 32 个字符"),
        (alipay_form, "mch_id", lambda d: "1900000109", "支付宝卖家用户号为 2088 开头的 16 位数字"),
    ],
    ids=["wechat-half-private-key", "alipay-half-private-key", "half-public-key", "short-apiv3-key", "alipay-seller-id"],
)  # fmt: skip
def test_a_half_pasted_key_is_refused_at_the_form_with_a_field_error(form, field, change, message):
    hospital = make_hospital()
    client = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital]))
    data = form(hospital)
    data[field] = change(data)
    response = client.post(ADD, data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [message]}
    assert not MerchantAccount.objects.exists()


def test_a_hospitals_administrator_cannot_set_the_platforms_account():
    hospital = make_hospital()
    client = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital]))
    response = client.post(ADD, wechat_form(None))
    assert response.context["adminform"].form.errors == {"hospital": ["请选择医院；平台统一收款账户只能由平台管理员设置"]}
    assert not MerchantAccount.objects.filter(hospital=None).exists()


def test_finance_sees_the_accounts_but_cannot_change_them():
    hospital = make_hospital()
    account = sandbox_account("wechatpay", hospital=hospital)
    client = console_client(make_staff(role=roles.FINANCE, hospitals=[hospital]))
    assert client.get(ACCOUNTS).status_code == 200
    assert client.post(ADD, wechat_form(hospital)).status_code == 403
    page = client.get(f"{ACCOUNTS}{account.pk}/change/").content.decode()
    assert account.private_key.splitlines()[1] not in page


# --- which account takes a payment -----------------------------------------------------------------


def test_a_hospital_with_its_own_account_uses_it_and_the_others_the_platforms():
    own, other = make_hospital(), make_hospital()
    superuser = superuser_client()
    assert (
        superuser.post(ADD, wechat_form(None, mch_id="1900000001")).status_code == 302
    )  # 平台统一收款
    assert superuser.post(ADD, wechat_form(own, mch_id="1900000002")).status_code == 302
    assert superuser.post(ADD, alipay_form(None)).status_code == 302
    platform = MerchantAccount.objects.get(hospital=None, provider="wechatpay")
    hospitals = MerchantAccount.objects.get(hospital=own)

    assert merchant_for(hospital_id=own.pk, channel="wechat").key == str(hospitals.pk)
    assert merchant_for(hospital_id=other.pk, channel="wechat").key == str(platform.pk)
    assert merchant_for(hospital_id=own.pk, channel="alipay").mch_id == "2088000000000001"
    # The notification URL names the account, so a notification is verified with its keys.
    assert merchant_for(hospital_id=own.pk, channel="wechat").notify_url.endswith(
        f"/api/v1/payments/notify/wechatpay/{hospitals.pk}"
    )


def test_without_any_account_development_pays_through_the_sandbox():
    hospital = make_hospital()
    assert merchant_for(hospital_id=hospital.pk, channel="wechat").key == SANDBOX
    assert merchant_for(hospital_id=hospital.pk, channel="alipay").key == SANDBOX


def hold_and_pay(account, patient, session, *, seq: int, channel: str):
    hold = booking.hold_slot(account=account, slot_id=session.slots.get(seq=seq).id)
    booking.confirm_hold(
        account=account, hold_id=hold.id, patient_id=patient.id, channel=channel, insurance=False
    )
    return hold, api_client(account).post(f"/api/v1/holds/{hold.id}/pay")


@pytest.mark.parametrize("provider", ["wechatpay", "alipay"])
def test_a_switched_off_account_takes_no_new_payments_but_refunds_its_earlier_ones(
    world, booker, provider
):
    account_row = sandbox_account(provider, hospital=world.hospital)
    sandbox_account(provider, hospital=None)  # a platform account exists: no fallback to it either
    channel = "wechat" if provider == "wechatpay" else "alipay"
    account, patient = booker

    hold, response = hold_and_pay(account, patient, world.session, seq=1, channel=channel)
    assert response.status_code == 200, response.json()
    payment = Payment.objects.get(hold=hold)
    assert (payment.provider, payment.merchant_key) == (provider, str(account_row.pk))
    if provider == "alipay":
        open_pay_page(response.json()["pay_url"])
    assert (
        payment_sandbox()
        .trade(payment.out_trade_no)
        .notify_url.endswith(f"/notify/{provider}/{account_row.pk}")
    )
    pay_at_provider(payment.out_trade_no)
    run_worker()
    registration = Registration.objects.get(hold=hold)
    assert registration.status == RegistrationStatus.BOOKED

    # Staff switch the account off in the console.
    admin = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[world.hospital]))
    form = alipay_form if provider == "alipay" else wechat_form
    data = {**form(world.hospital), "new_private_key": "", "new_api_v3_key": ""}
    data.update(
        app_id=account_row.app_id, mch_id=account_row.mch_id, serial_no=account_row.serial_no,
        provider_public_key=account_row.provider_public_key, provider_public_key_id=account_row.provider_public_key_id,
        gateway_url=account_row.gateway_url,
    )  # fmt: skip
    data.pop("enabled"), data.pop("hospital"), data.pop("provider")
    assert admin.post(f"{ACCOUNTS}{account_row.pk}/change/", data).status_code == 302
    account_row.refresh_from_db()
    assert account_row.enabled is False

    someone = make_account()  # another patient, as the first may book this session once only
    _other, refused = hold_and_pay(
        someone,
        booking_fixtures.ready_to_book(someone, world.hospital, name="李娜"),
        world.session,
        seq=2,
        channel=channel,
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "channel_unavailable"

    cancelled = api_client(account).post(f"/api/v1/registrations/{registration.id}/cancel")
    assert cancelled.status_code == 200, cancelled.json()
    run_worker()
    registration.refresh_from_db()
    payment.refresh_from_db()
    assert registration.status == RegistrationStatus.CANCELLED
    assert payment.refunded_fen == payment.amount_fen
    refund = Refund.objects.get(payment=payment)
    assert [r.out_refund_no for r in payment_sandbox().refunds(payment.out_trade_no)] == [
        refund.refund_no
    ]
    assert find_violations() == []


# --- 测试商户号 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["wechatpay", "alipay"])
def test_testing_an_account_against_the_sandbox_gateway_says_it_works(provider):
    hospital = make_hospital()
    account = sandbox_account(provider, hospital=hospital)
    client = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital]))
    response = client.post(ACCOUNTS, {"action": "test_merchant", "_selected_action": [account.pk]})
    assert response.status_code == 302
    (message,) = messages_of(response)
    assert "连接正常" in message
    entry = AuditEntry.objects.get(action=AuditEntry.Action.OTHER)
    assert entry.result == AuditEntry.Result.SUCCESS and "连接正常" in entry.detail
    assert entry.hospital_id == hospital.pk


@pytest.mark.parametrize(
    "provider",
    [
        "wechatpay",
        "alipay",
    ],
)
def test_testing_an_account_with_the_wrong_provider_key_says_what_is_wrong(provider):
    hospital = make_hospital()
    _, stranger = key_pair()
    account = sandbox_account(provider, hospital=hospital, provider_public_key=stranger)
    client = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital]))
    response = client.post(ACCOUNTS, {"action": "test_merchant", "_selected_action": [account.pk]})
    (message,) = messages_of(response)
    assert "连接正常" not in message and "验签失败" in message
    assert (
        AuditEntry.objects.get(action=AuditEntry.Action.OTHER).result == AuditEntry.Result.FAILURE
    )


@pytest.mark.parametrize("provider", ["wechatpay", "alipay"])
def test_testing_an_account_whose_private_key_the_provider_does_not_know_is_refused(provider):
    hospital = make_hospital()
    private, _ = key_pair()
    account = sandbox_account(provider, hospital=hospital, private_key=private)
    client = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital]))
    response = client.post(ACCOUNTS, {"action": "test_merchant", "_selected_action": [account.pk]})
    (message,) = messages_of(response)
    assert "连接正常" not in message
    assert (
        AuditEntry.objects.get(action=AuditEntry.Action.OTHER).result == AuditEntry.Result.FAILURE
    )
