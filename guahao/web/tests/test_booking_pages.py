"""The booking pages with Django's test client: a session's windows, the hold page and its actions,
the outcome, 我的挂号. Each drives the same booking services as /api/v1."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import quote, urlsplit

import pytest
from django.conf import settings
from django.test import Client

from guahao import clock
from guahao.booking.models import Hold, Registration
from guahao.booking.states import HoldState, RegistrationStatus
from guahao.catalog.models import Notice, NoticeAck
from guahao.testing import make_account, make_patient, pay_on_cashier, payment_sandbox, run_worker
from guahao.web.tests.conftest import sign_in_client

pytestmark = pytest.mark.django_db


def acknowledge_notices(account, hospital) -> None:
    for notice in Notice.objects.filter(hospital=hospital, is_active=True):
        NoticeAck.objects.get_or_create(
            notice=notice, account=account, defaults={"acked_at": clock.now()}
        )


def first_window(session) -> str:
    return clock.local(session.slots.order_by("seq").first().window_start).isoformat()


def hold_via_page(client: Client, session) -> Hold:
    response = client.post(
        "/holds", {"session_id": session.id, "window_start": first_window(session)}
    )
    assert response.status_code == 302, response.content.decode()[:500]
    hold_id = int(re.fullmatch(r"/holds/(\d+)", response["Location"]).group(1))
    return Hold.objects.get(id=hold_id)


def pay_through_page(client: Client, hold: Hold, patient, *, channel: str = "wechat") -> str:
    response = client.post(
        f"/holds/{hold.id}/pay", {"patient_id": patient.id, "channel": channel, "insurance": "0"}
    )
    assert response.status_code == 302, response.content.decode()[:500]
    return response["Location"]


# --- 1. session page ----------------------------------------------------------------------------


def test_session_page_lists_windows_with_remaining_numbers(world, patient_client):
    page = patient_client.get(f"/sessions/{world.open_session.id}")
    text = page.content.decode()
    assert page.status_code == 200
    assert text.count('data-testid="window"') == 4
    assert "余 1" in text and "选择" in text and "彭飞" in text and "门诊楼 6 楼 A 区" in text


def test_session_page_signed_out_offers_sign_in_instead_of_holding(world, client):
    text = client.get(f"/sessions/{world.open_session.id}").content.decode()
    assert "登录后选择" in text and 'action="/holds"' not in text


def test_choosing_a_window_holds_its_next_free_number_and_opens_the_hold(
    world, account, patient_client
):
    hold = hold_via_page(patient_client, world.open_session)
    assert hold.account == account and hold.state == HoldState.HELD and hold.slot.seq == 1
    page = patient_client.get(f"/holds/{hold.id}")
    text = page.content.decode()
    assert page.status_code == 200
    assert 'data-expires-at="' in text and "锁号截止" in text and "取消锁号" in text


def test_a_full_window_is_answered_on_the_session_page(world, patient_client):
    other = sign_in_client(Client(), make_account())
    hold_via_page(other, world.open_session)
    response = patient_client.post(
        "/holds",
        {"session_id": world.open_session.id, "window_start": first_window(world.open_session)},
    )
    assert response.status_code == 409
    assert "约满" in response.content.decode()


def test_holding_is_rate_limited_like_the_api(world, patient_client, settings, monkeypatch):
    from guahao.limits import services as limits

    calls = []
    monkeypatch.setattr(limits, "hit", lambda *args: calls.append(args))
    hold_via_page(patient_client, world.open_session)
    assert calls and calls[0][0] == "hold_account" and calls[0][2][0] == "hold_ip"


def test_holding_needs_sign_in(world, client):
    response = client.post(
        "/holds",
        {"session_id": world.open_session.id, "window_start": first_window(world.open_session)},
    )
    assert response.status_code == 302 and response["Location"].startswith("/login")


# --- 2. hold page -------------------------------------------------------------------------------


def test_hold_page_preselects_the_default_patient(world, account, patient_client):
    make_patient(account, name="张三")
    mother = make_patient(account, name="李梅", relation="parent")
    from guahao.patients.services import set_default_patient

    set_default_patient(account=account, patient_id=mother.id)
    hold = hold_via_page(patient_client, world.open_session)
    text = patient_client.get(f"/holds/{hold.id}").content.decode()
    assert re.search(rf'value="{mother.id}" checked', text)
    assert "李*" in text and "李梅" not in text  # masked


def test_another_accounts_hold_is_a_missing_one(world, patient_client):
    other = sign_in_client(Client(), make_account())
    hold = hold_via_page(other, world.open_session)
    for response in (
        patient_client.get(f"/holds/{hold.id}"),
        patient_client.get(f"/holds/{hold.id}/result"),
        patient_client.post(f"/holds/{hold.id}/release"),
        patient_client.post(f"/holds/{hold.id}/pay", {"patient_id": 1, "channel": "wechat"}),
        patient_client.get("/holds/999999"),
    ):
        assert response.status_code == 404
        assert "锁号记录不存在" in response.content.decode()
    assert Hold.objects.get(id=hold.id).state == HoldState.HELD


def test_pay_without_acknowledged_notice_goes_to_the_notices(world, account, patient_client):
    patient = make_patient(account)
    hold = hold_via_page(patient_client, world.open_session)
    location = pay_through_page(patient_client, hold, patient)
    assert location == f"/notices?next=%2Fholds%2F{hold.id}"


def test_pay_sends_to_the_providers_cashier_which_sends_back_to_the_registration(
    world, account, patient_client
):
    patient = make_patient(account)
    acknowledge_notices(account, world.hospital)
    hold = hold_via_page(patient_client, world.open_session)
    location = pay_through_page(patient_client, hold, patient)
    # WeChat H5 pay: the provider's page, told where to send the browser back.
    assert location.startswith(f"{payment_sandbox().url}/cashier/wechat/")
    assert (
        "redirect_url=" + quote(f"{settings.PUBLIC_URL}/holds/{hold.id}/result", safe="")
        in location
    )
    status, back = pay_on_cashier(location)
    assert status == 303 and back == f"{settings.PUBLIC_URL}/holds/{hold.id}/result"
    result = patient_client.get(urlsplit(back).path)
    text = result.content.decode()
    assert result.status_code == 200 and "预约成功" in text
    reg = Registration.objects.get(hold=hold)
    assert reg.registration_no in text and "第 1 号" in text and "门诊楼 6 楼 A 区" in text


def test_alipay_sends_to_its_signed_wap_pay_page_which_sends_back_to_the_registration(
    world, account, patient_client
):
    patient = make_patient(account)
    acknowledge_notices(account, world.hospital)
    hold = hold_via_page(patient_client, world.open_session)
    location = pay_through_page(patient_client, hold, patient, channel="alipay")
    # 手机网站支付: the browser opens the signed alipay.trade.wap.pay request itself.
    page = urlsplit(location)
    assert location.startswith(f"{payment_sandbox().url}/gateway.do?")
    assert "method=alipay.trade.wap.pay" in page.query and "sign=" in page.query
    status, back = pay_on_cashier(location)
    assert status == 303 and back.startswith(f"{settings.PUBLIC_URL}/holds/{hold.id}/result?")
    text = patient_client.get(urlsplit(back).path).content.decode()
    assert "预约成功" in text and Registration.objects.get(hold=hold).registration_no in text


def test_a_failed_payment_may_be_paid_again_while_the_hold_lives(world, account, patient_client):
    patient = make_patient(account)
    acknowledge_notices(account, world.hospital)
    hold = hold_via_page(patient_client, world.open_session)
    first = pay_through_page(patient_client, hold, patient)
    assert pay_on_cashier(first, action="cancel")[0] == 303
    page = patient_client.get(f"/holds/{hold.id}/result")  # back from the cashier: not paid
    assert "暂未查询到支付成功" in page.content.decode() and "重新支付" in page.content.decode()
    second = pay_through_page(patient_client, hold, patient)
    assert second != first
    assert pay_on_cashier(second)[0] == 303
    response = patient_client.post(f"/holds/{hold.id}/check")  # 我已支付
    assert response.status_code == 302 and response["Location"] == f"/holds/{hold.id}/result"
    assert Hold.objects.get(id=hold.id).state == HoldState.SUCCEEDED


def test_release_is_one_tap_and_frees_the_number(world, patient_client):
    hold = hold_via_page(patient_client, world.open_session)
    response = patient_client.post(f"/holds/{hold.id}/release")
    assert (
        response.status_code == 302 and response["Location"] == f"/sessions/{world.open_session.id}"
    )
    assert Hold.objects.get(id=hold.id).state == HoldState.RELEASED
    assert "余 1" in patient_client.get(f"/sessions/{world.open_session.id}").content.decode()


def test_an_expired_hold_says_so_on_reload(world, patient_client):
    hold = hold_via_page(patient_client, world.open_session)
    with clock.travel(dt.timedelta(minutes=11)):
        text = patient_client.get(f"/holds/{hold.id}").content.decode()
    assert "锁号已超时，号源已释放" in text and f'href="/sessions/{world.open_session.id}"' in text
    assert 'action="/holds/' not in text


def test_an_unknown_patient_is_refused_on_the_hold_page(world, account, patient_client):
    acknowledge_notices(account, world.hospital)
    stranger = make_patient(make_account())
    hold = hold_via_page(patient_client, world.open_session)
    response = patient_client.post(
        f"/holds/{hold.id}/pay", {"patient_id": stranger.id, "channel": "wechat"}
    )
    assert response.status_code == 404 and "就诊人不存在" in response.content.decode()
    assert 'data-testid="hold-message"' in response.content.decode()


# --- 3/4. outcome and 我的挂号 ------------------------------------------------------------------


def book(world, account, client) -> Registration:
    patient = make_patient(account)
    acknowledge_notices(account, world.hospital)
    hold = hold_via_page(client, world.open_session)
    location = pay_through_page(client, hold, patient)
    assert pay_on_cashier(location)[0] == 303
    client.get(f"/holds/{hold.id}/result")
    return Registration.objects.get(hold=hold)


def test_registrations_tabs_pending_then_booked_then_cancelled(world, account, patient_client):
    hold = hold_via_page(patient_client, world.open_session)
    pending = patient_client.get("/me/registrations").content.decode()
    assert 'data-testid="pending-hold"' in pending and f'href="/holds/{hold.id}"' in pending
    patient_client.post(f"/holds/{hold.id}/release")

    reg = book(world, account, patient_client)
    booked = patient_client.get("/me/registrations?tab=booked").content.decode()
    for expected in (
        reg.registration_no,
        "第 1 号",
        "张*",
        "皮肤科",
        "彭飞",
        "门诊楼 6 楼 A 区",
        "¥25.00",
        "退号截止",
        "原路退回",
        "爽约",
        "取消挂号",
    ):
        assert expected in booked, expected

    response = patient_client.post(f"/me/registrations/{reg.id}/cancel")
    assert response.status_code == 302
    reg.refresh_from_db()
    assert reg.status in (RegistrationStatus.REFUNDING, RegistrationStatus.CANCELLED)
    run_worker()
    reg.refresh_from_db()
    assert reg.status == RegistrationStatus.CANCELLED
    cancelled = patient_client.get("/me/registrations?tab=cancelled").content.decode()
    assert reg.registration_no in cancelled and 'data-testid="cancel"' not in cancelled


def test_cancel_is_not_offered_after_the_deadline(world, account, patient_client):
    reg = book(world, account, patient_client)
    with clock.travel(dt.timedelta(hours=23)):
        text = patient_client.get("/me/registrations?tab=booked").content.decode()
        assert reg.registration_no in text and 'data-testid="cancel"' not in text
        response = patient_client.post(f"/me/registrations/{reg.id}/cancel")
    assert response.status_code == 409 and "截止" in response.content.decode()


def test_another_accounts_registration_is_a_missing_one(world, account, patient_client):
    reg = book(world, account, patient_client)
    stranger = sign_in_client(Client(), make_account())
    response = stranger.post(f"/me/registrations/{reg.id}/cancel")
    assert response.status_code == 404 and "挂号记录不存在" in response.content.decode()
    assert reg.registration_no not in stranger.get("/me/registrations?tab=booked").content.decode()
    assert stranger.get(f"/holds/{reg.hold_id}/result").status_code == 404


def test_my_pages_need_sign_in(client):
    for path in ("/me/registrations", "/me/patients", "/holds/1", "/holds/1/result"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login?next=")


def test_result_page_says_registering_and_failed_plainly(world, account, patient_client):
    hold = hold_via_page(patient_client, world.open_session)
    Hold.objects.filter(id=hold.id).update(state=HoldState.REGISTERING)
    text = patient_client.get(f"/holds/{hold.id}/result").content.decode()
    assert "正在为您挂号" in text and "刷新" in text
    Hold.objects.filter(id=hold.id).update(state=HoldState.FAILED)
    text = patient_client.get(f"/holds/{hold.id}/result").content.decode()
    assert "挂号未成功" in text and "原路退回" in text and "0571-87065701" in text
    # A hold that is over is not reopened for paying.
    response = patient_client.get(f"/holds/{hold.id}")
    assert response.status_code == 302 and response["Location"] == f"/holds/{hold.id}/result"


def test_a_provider_that_does_not_answer_on_return_is_said_so(
    world, account, patient_client, monkeypatch
):
    from guahao.booking import services
    from guahao.errors import UpstreamUnavailable

    patient = make_patient(account)
    acknowledge_notices(account, world.hospital)
    hold = hold_via_page(patient_client, world.open_session)
    pay_through_page(patient_client, hold, patient)

    def down(**kwargs):
        raise UpstreamUnavailable("支付机构暂时无法响应", code="provider_unavailable")

    monkeypatch.setattr(services, "check_payment", down)
    text = patient_client.get(f"/holds/{hold.id}/result").content.decode()
    assert "暂时无法查询支付结果" in text and "刷新" in text
    response = patient_client.post(f"/holds/{hold.id}/check")  # 我已支付: the error page
    assert response.status_code == 503 and "0571-87065701" in response.content.decode()


def test_a_paid_hold_the_his_has_not_confirmed_shows_as_registering(
    world, account, patient_client, monkeypatch
):
    """Paid, but the HIS has not answered the registration yet: 我的挂号 says so (挂号中), with the
    promise of a full refund if it fails, instead of the payment vanishing from the patient's view."""
    from guahao.his import services as his_services
    from guahao.his.simulated import SimulatedHis

    his = SimulatedHis()
    monkeypatch.setattr(his_services, "adapter", lambda: his)
    his.fail_next("register", "timeout", times=5)
    patient = make_patient(account)
    acknowledge_notices(account, world.hospital)
    hold = hold_via_page(patient_client, world.open_session)
    location = pay_through_page(patient_client, hold, patient)
    assert pay_on_cashier(location)[0] == 303
    run_worker()
    hold.refresh_from_db()
    assert hold.state == HoldState.REGISTERING

    page = patient_client.get("/me/registrations").content.decode()
    assert 'data-testid="registering-hold"' in page and "挂号中" in page and "全额原路退回" in page
    assert f'href="/holds/{hold.id}/result"' in page and "没有待支付的锁号" not in page

    his.clear_faults()
    with clock.travel(dt.timedelta(minutes=5)):
        run_worker()  # the HIS answers now: the registration is confirmed
    assert Registration.objects.filter(hold=hold).exists()
    page = patient_client.get("/me/registrations").content.decode()
    assert 'data-testid="registering-hold"' not in page
