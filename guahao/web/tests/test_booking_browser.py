"""The booking flow in a real browser (Debian's Chromium at 375×812, like a phone in WeChat),
against the live app: hold a window, watch the countdown, add a patient (a wrong ID first), pay on
the provider's cashier (the payment sandbox), see and cancel the registration; the countdown running out; and a returning
patient's taps from the home page to a paid registration."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.booking.models import Hold, Registration
from guahao.booking.states import HoldState, RegistrationStatus
from guahao.catalog.models import Notice, NoticeAck
from guahao.patients.models import Patient
from guahao.patients.services import set_default_patient
from guahao.testing import make_id_number, make_patient, payment_sandbox, run_worker
from guahao.web.tests.conftest import SCREENSHOTS

pytestmark = pytest.mark.browser

WRONG_ID = "110105199003070001"  # the check character does not match


def _first_hold(account) -> Hold:
    return Hold.objects.filter(account=account).order_by("-id").first()


def test_main_flow_hold_add_patient_pay_see_and_cancel(phone, site, browser_world, account, signed_in, shot) -> None:
    session = browser_world.open_session
    signed_in(phone, account, next_path=f"/sessions/{session.id}")
    if "/notices" in phone.url:  # a first sign-in owes the notices
        with phone.expect_navigation():
            phone.click("text=我已阅读并同意以上须知")
    assert phone.url.endswith(f"/sessions/{session.id}")
    assert phone.locator("[data-testid=window]").count() == 4
    shot(phone, "session")

    with phone.expect_navigation():
        phone.locator("[data-testid=window] button", has_text="选择").first.click()
    hold = _first_hold(account)
    assert phone.url.endswith(f"/holds/{hold.id}")
    clock_text = phone.locator("[data-countdown-clock]").inner_text()
    assert clock_text.startswith(("09:", "10:00")), clock_text
    assert phone.locator("text=还没有就诊人").is_visible()
    shot(phone, "hold")
    phone.set_viewport_size({"width": 320, "height": 640})  # the narrowest phone: no sideways scroll
    assert phone.evaluate("document.documentElement.scrollWidth") <= 320
    phone.set_viewport_size({"width": 375, "height": 812})

    with phone.expect_navigation():
        phone.click("text=＋ 添加就诊人")
    phone.fill("#f-name", "赵六")
    phone.fill("#f-id-number", WRONG_ID)
    phone.fill("#f-phone", "13912345678")
    phone.check("input[name=relation][value=self]")
    with phone.expect_navigation():
        phone.click("[data-testid=add-patient]")
    error = phone.locator("[data-testid=error-id_number]")
    assert "校验位不正确" in error.inner_text()
    # Shown at the field: right below the ID number input.
    field_box = phone.locator("#f-id-number").bounding_box()
    error_box = error.bounding_box()
    assert 0 <= error_box["y"] - (field_box["y"] + field_box["height"]) < 40
    shot(phone, "patient-add-error")
    phone.fill("#f-id-number", make_id_number("19850615"))
    with phone.expect_navigation():
        phone.click("[data-testid=add-patient]")
    patient = Patient.objects.get(account=account)
    assert phone.url.endswith(f"/holds/{hold.id}?patient={patient.id}")
    assert phone.locator(f"input[name=patient_id][value='{patient.id}']").is_checked()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375

    with phone.expect_navigation():
        phone.click("[data-testid=pay]")
    # The provider's cashier (the sandbox's WeChat H5 page), which sends the browser back.
    assert phone.url.startswith(f"{payment_sandbox().url}/cashier/wechat/")
    assert "¥" in phone.content() and "确认支付" in phone.content()
    phone.screenshot(path=str(SCREENSHOTS.parent / "sandbox-cashier.png"), full_page=True)
    with phone.expect_navigation():
        phone.click("button.pay")
    assert phone.url == f"{site}/holds/{hold.id}/result"
    assert "预约成功" in phone.locator("[data-testid=result]").inner_text()
    registration = Registration.objects.get(hold_id=hold.id)
    assert registration.registration_no in phone.content()
    shot(phone, "result")

    phone.goto(f"{site}/me/registrations?tab=booked")
    card = phone.locator("[data-testid=registration]", has_text=registration.registration_no)
    assert "赵*" in card.inner_text() and "门诊楼 6 楼 A 区" in card.inner_text()
    shot(phone, "registrations")
    with phone.expect_navigation():
        card.locator("[data-testid=cancel]").click()
    run_worker()  # the refund's notification settles it: REFUNDING → CANCELLED
    assert Registration.objects.get(id=registration.id).status == RegistrationStatus.CANCELLED
    phone.goto(f"{site}/me/registrations?tab=cancelled")
    assert phone.locator("[data-testid=registration]", has_text=registration.registration_no).is_visible()
    shot(phone, "registrations-cancelled")

    phone.goto(f"{site}/me/patients")
    assert phone.locator("[data-testid=patient]", has_text="赵*").is_visible()
    shot(phone, "patients")


def test_the_countdown_runs_out_and_says_the_number_is_released(
    phone, site, browser_world, account, signed_in, shot
) -> None:
    session = browser_world.open_session
    for notice in Notice.objects.filter(hospital=browser_world.hospital):
        NoticeAck.objects.create(notice=notice, account=account, acked_at=clock.now())
    make_patient(account)
    phone.clock.install()
    signed_in(phone, account, next_path=f"/sessions/{session.id}")
    with phone.expect_navigation():
        phone.locator("[data-testid=window] button", has_text="选择").first.click()
    hold = _first_hold(account)
    assert phone.locator("[data-testid=countdown]").is_visible()
    phone.clock.fast_forward("09:00")
    assert phone.locator("[data-countdown-clock]").inner_text().startswith(("00:5", "01:0"))
    phone.clock.fast_forward("01:05")
    expired = phone.locator("[data-countdown-expired]")
    expired.wait_for(state="visible")
    assert "锁号已超时，号源已释放" in expired.inner_text()
    assert not phone.locator("[data-testid=pay]").is_visible()
    shot(phone, "hold-expired")

    # The server agrees on reload, and choosing again leads back to the session.
    with clock.travel(dt.timedelta(minutes=11)):
        phone.reload()
        assert phone.locator("[data-testid=expired]").is_visible()
        assert Hold.objects.get(id=hold.id).state == HoldState.HELD  # no sweeper needed to say so
        with phone.expect_navigation():
            phone.click("text=重新选择号源")
        assert phone.url.endswith(f"/sessions/{session.id}")


def test_a_returning_patient_books_from_home_in_at_most_8_taps(
    phone, site, browser_world, account, signed_in, shot
) -> None:
    for notice in Notice.objects.filter(hospital=browser_world.hospital):
        NoticeAck.objects.create(notice=notice, account=account, acked_at=clock.now())
    make_patient(account, name="张三")
    mother = make_patient(account, name="李梅", relation="parent")
    set_default_patient(account=account, patient_id=mother.id)
    signed_in(phone, account, next_path="/")
    assert phone.url.rstrip("/") == site.rstrip("/")

    taps = 0

    def tap(locator) -> None:
        nonlocal taps
        taps += 1
        with phone.expect_navigation():
            locator.click()

    tap(phone.locator("a.entry--main"))  # 预约挂号
    tap(phone.locator("a", has_text="皮肤科").first)
    tap(phone.locator("a.session__link", has_text="彭飞").first)
    tap(phone.locator("[data-testid=window] button", has_text="选择").first)
    assert phone.locator(f"input[name=patient_id][value='{mother.id}']").is_checked()  # the default
    tap(phone.locator("[data-testid=pay]"))  # 确认并支付 (WeChat Pay, 自费 preselected)
    tap(phone.locator("button.pay"))  # the cashier's 确认支付, which sends the browser back
    assert "预约成功" in phone.locator("[data-testid=result]").inner_text()
    registration = Registration.objects.get(account=account)
    assert registration.patient_id == mother.id and registration.status == RegistrationStatus.BOOKED
    assert taps <= 8, taps
