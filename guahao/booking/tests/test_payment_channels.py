"""Which payment channels a hospital offers is its own setting (console), shown to patients, and
a hold can only be confirmed and paid with one of them."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from guahao.booking import services
from guahao.catalog.models import Hospital
from guahao.console.testing import superuser_client
from guahao.errors import InvalidInput
from guahao.testing import api_client, make_hospital


def test_a_new_hospital_offers_wechat_and_alipay(db):
    hospital = make_hospital()
    assert hospital.payment_channels == ["wechat", "alipay"]
    body = api_client().get(f"/api/v1/hospitals/{hospital.id}").json()
    assert body["payment_channels"] == [{"code": "wechat", "label": "微信支付"}, {"code": "alipay", "label": "支付宝"}]
    listed = next(h for h in api_client().get("/api/v1/hospitals").json() if h["id"] == hospital.id)
    assert listed["payment_channels"] == body["payment_channels"]


def test_the_hold_lists_the_hospitals_channels(world, booker):
    Hospital.objects.filter(id=world.hospital.id).update(payment_channels=["unionpay", "wechat"])
    me = api_client(booker[0])
    hold = me.post("/api/v1/holds", {"slot_id": world.session.slots.first().id}).json()
    # In the declared order, whatever order the console stored.
    assert hold["payment_channels"] == [{"code": "wechat", "label": "微信支付"}, {"code": "unionpay", "label": "银行卡"}]


def test_a_channel_the_hospital_does_not_offer_is_refused_naming_the_offered_ones(world, booker):
    account, patient = booker
    me = api_client(account)
    hold = me.post("/api/v1/holds", {"slot_id": world.session.slots.first().id}).json()
    response = me.post(f"/api/v1/holds/{hold['id']}/confirm", {"patient_id": patient.id, "channel": "unionpay"})
    assert response.status_code == 400
    assert response.json() == {
        "code": "channel_not_offered",
        "message": "本院暂不支持银行卡，请选择 微信支付、支付宝",
        "offered": ["wechat", "alipay"],
    }
    Hospital.objects.filter(id=world.hospital.id).update(payment_channels=["wechat", "alipay", "unionpay"])
    response = me.post(f"/api/v1/holds/{hold['id']}/confirm", {"patient_id": patient.id, "channel": "unionpay"})
    assert response.status_code == 200, response.json()
    assert response.json()["channel"] == "unionpay"


def test_paying_with_a_channel_switched_off_since_the_confirmation_is_refused(world, booker):
    account, patient = booker
    hold = services.hold_slot(account=account, slot_id=world.session.slots.first().id)
    services.confirm_hold(account=account, hold_id=hold.id, patient_id=patient.id, channel="alipay", insurance=False)
    Hospital.objects.filter(id=world.hospital.id).update(payment_channels=["wechat"])
    with pytest.raises(InvalidInput) as err:
        services.pay_hold(account=account, hold_id=hold.id)
    assert err.value.message == "本院暂不支持支付宝，请选择 微信支付"
    services.confirm_hold(account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False)
    payment, _ = services.pay_hold(account=account, hold_id=hold.id)
    assert payment.channel == "wechat"


@pytest.fixture
def operator(db) -> Client:
    return superuser_client()


def _form(hospital: Hospital, channels: list[str]) -> dict:
    return {
        "code": hospital.code,
        "name": hospital.name,
        "short_name": "",
        "grade": "",
        "address": "",
        "service_phone": hospital.service_phone,
        "browse_level": 2,
        "schedule_days": 14,
        "payment_channels": channels,
        "is_active": "on",
        "campuses-TOTAL_FORMS": "0",
        "campuses-INITIAL_FORMS": "0",
        "campuses-MIN_NUM_FORMS": "0",
        "campuses-MAX_NUM_FORMS": "1000",
    }


def test_the_console_edits_a_hospitals_channels(operator):
    hospital = make_hospital()
    url = reverse("admin:catalog_hospital_change", args=[hospital.id])
    page = operator.get(url)
    assert page.status_code == 200
    assert "银行卡" in page.content.decode()
    response = operator.post(url, _form(hospital, ["unionpay", "wechat"]))
    assert response.status_code == 302, response.content.decode()[:2000]
    hospital.refresh_from_db()
    assert hospital.payment_channels == ["wechat", "unionpay"]
    refused = operator.post(url, _form(hospital, []))
    assert refused.status_code == 200
    assert "请至少选择一种支付渠道" in refused.content.decode()
    assert "微信支付、银行卡" in operator.get(reverse("admin:catalog_hospital_changelist")).content.decode()
