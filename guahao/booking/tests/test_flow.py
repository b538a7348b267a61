"""The whole patient journey over HTTP, as a phone client would drive it."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings

from guahao.booking.models import Hold
from guahao.payments.models import Payment, Refund
from guahao.scheduling.models import Slot
from guahao.testing import ApiClient, make_id_number, pay_on_cashier, run_worker

PHONE = "13912345678"


def sign_in(caplog) -> ApiClient:
    anonymous = ApiClient()
    with caplog.at_level(logging.INFO, logger="guahao.sms"):
        assert anonymous.post("/api/v1/auth/sms-code", {"phone": PHONE}).status_code == 200
    code = next(r.sms_code for r in caplog.records if hasattr(r, "sms_code"))
    response = anonymous.post("/api/v1/auth/login", {"phone": PHONE, "code": code})
    assert response.status_code == 200, response.json()
    return ApiClient(token=response.json()["token"])


def first_bookable_leaf(tree: list[dict]) -> dict:
    for node in tree:
        if node.get("bookable"):
            return node
        found = first_bookable_leaf(node.get("children", []))
        if found:
            return found
    return {}


@pytest.mark.django_db(transaction=True)
def test_sign_in_hold_pay_register_cancel_refund(world, caplog):
    me = sign_in(caplog)

    hospitals = me.get("/api/v1/hospitals").json()
    hospital = next(h for h in hospitals if h["id"] == world.hospital.id)
    tree = me.get(f"/api/v1/hospitals/{hospital['id']}/departments").json()
    department = first_bookable_leaf(tree)
    assert department["id"] == world.department.id

    availability = me.get(f"/api/v1/departments/{department['id']}/availability", days=7).json()
    session = next(
        s for day in availability["days"] for s in day["sessions"] if s["status"] == "available"
    )
    assert session["remaining"] == 4
    windows = me.get(f"/api/v1/sessions/{session['id']}/slots").json()
    window = windows["windows"][0]

    response = me.post("/api/v1/holds", {"session_id": session["id"], "window_start": window["window_start"]})
    assert response.status_code == 201, response.json()
    hold = response.json()
    assert hold["state"] == "held"
    assert 590 <= hold["remaining_seconds"] <= 600

    id_number = make_id_number("19850612")
    response = me.post(
        "/api/v1/patients",
        {"name": "王小明", "id_type": "resident", "id_number": id_number, "phone": "13700001111", "relation": "self"},
    )
    assert response.status_code == 201, response.json()
    patient = response.json()
    assert patient["name"] == "王*明"
    assert id_number not in response.content.decode()

    response = me.post(f"/api/v1/holds/{hold['id']}/confirm", {"patient_id": patient["id"], "channel": "wechat"})
    assert response.status_code == 409
    assert response.json()["code"] == "notice_not_acknowledged"
    for notice in me.get(f"/api/v1/hospitals/{hospital['id']}/notices").json():
        assert me.post(f"/api/v1/notices/{notice['id']}/ack").status_code == 200
    response = me.post(f"/api/v1/holds/{hold['id']}/confirm", {"patient_id": patient["id"], "channel": "wechat"})
    assert response.status_code == 200, response.json()

    response = me.post(f"/api/v1/holds/{hold['id']}/pay")
    assert response.status_code == 200, response.json()
    pay = response.json()
    assert pay["amount_fen"] == 2500
    assert me.get(f"/api/v1/holds/{hold['id']}").json()["state"] == "paying"

    # The patient pays on the provider's cashier (the sandbox's, WeChat H5 pay), which sends the
    # browser back to the result page; the signed notification reaches us later.
    status, back = pay_on_cashier(pay["pay_url"])
    assert status == 303 and back == f"{settings.PUBLIC_URL}/holds/{hold['id']}/result"
    run_worker()

    hold = me.get(f"/api/v1/holds/{hold['id']}").json()
    assert hold["state"] == "succeeded"
    registration = me.get(f"/api/v1/registrations/{hold['registration_id']}").json()
    assert registration["status"] == "booked"
    assert registration["status_label"] == "预约成功"
    assert registration["registration_no"]
    assert registration["patient"]["name"] == "王*明"
    assert [r["id"] for r in me.get("/api/v1/registrations", status="booked").json()] == [registration["id"]]

    response = me.post(f"/api/v1/registrations/{registration['id']}/cancel")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "refunding"
    run_worker()

    registration = me.get(f"/api/v1/registrations/{registration['id']}").json()
    assert registration["status"] == "cancelled"
    payment = Payment.objects.get(out_trade_no=pay["out_trade_no"])
    assert payment.refunded_fen == payment.amount_fen == 2500
    assert Refund.objects.filter(payment=payment, state=Refund.State.SUCCEEDED).count() == 1
    # The number went back to the pool.
    assert Slot.objects.get(id=Hold.objects.get(id=hold["id"]).slot_id).state == Slot.State.FREE
