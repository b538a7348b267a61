"""Fixtures for the patient pages: a small hospital world with a 皮肤科, the SMS outbox, signed-in
test clients, and the browser fixtures (one Chromium per test session, Debian's /usr/bin/chromium,
never `playwright install`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client

from guahao import clock
from guahao.catalog.models import Campus, Department, Doctor, Hospital
from guahao.patients import services as patient_services
from guahao.patients.models import Account
from guahao.patients.tests.conftest import SmsOutbox, sms_outbox  # noqa: F401 - a fixture, re-exported
from guahao.scheduling.models import ReleaseRule, Session, Slot
from guahao.testing import make_account, make_department, make_doctor, make_hospital, make_session
from guahao.web.auth import SESSION_KEY

SCREENSHOTS = Path(django_settings.BASE_DIR) / "docs" / "img" / "patient"
# The world's clock: a weekday morning after the 07:00 release, so strips read the same every run.
MORNING = dt.time(10, 0)


@dataclass
class World:
    hospital: Hospital
    skin: Department  # 皮肤科: a level-1 leaf, bookable at browse level 2
    medicine: Department  # 内科
    cardio: Department  # 心血管内科 under 内科
    peng: Doctor  # 彭飞, 皮肤科
    wang: Doctor  # 王医生, 心血管内科
    open_session: Session  # tomorrow morning, 4 numbers
    afternoon_session: Session  # tomorrow afternoon, 2 numbers
    full_session: Session  # in 2 days, no number left
    suspended_session: Session  # in 3 days, 停诊
    unreleased_session: Session  # in window_days + 1 days: released tomorrow 07:00

    def day(self, offset: int) -> dt.date:
        return clock.today() + dt.timedelta(days=offset)


@pytest.fixture
def frozen_morning() -> Iterator[None]:
    with clock.frozen_at(clock.at_local(clock.today(), MORNING)):
        yield


@pytest.fixture
def world(db, frozen_morning) -> World:
    return build_world()


def build_world() -> World:
    hospital = make_hospital(name="杭州市第一人民医院", short_name="市一医院", service_phone="0571-87065701", schedule_days=14)
    ReleaseRule.objects.filter(hospital=hospital).update(release_time=dt.time(7, 0), window_days=7)
    Campus.objects.create(hospital=hospital, name="总院区", address="浙江省杭州市上城区浣纱路261号")
    skin = make_department(hospital, name="皮肤科")
    Department.objects.filter(pk=skin.pk).update(location="门诊楼 6 楼 A 区", sort_order=1)
    medicine = make_department(hospital, name="内科")
    cardio = make_department(hospital, name="心血管内科", parent=medicine)
    peng = make_doctor(skin, name="彭飞", title=Doctor.Title.ASSOCIATE_CHIEF)
    wang = make_doctor(cardio, name="王医生")
    today = clock.today()
    days = dt.timedelta
    world = World(
        hospital=hospital,
        skin=skin,
        medicine=medicine,
        cardio=cardio,
        peng=peng,
        wang=wang,
        open_session=make_session(skin, doctor=peng, day=today + days(1), slots=4, fee_fen=2500),
        afternoon_session=make_session(skin, doctor=peng, day=today + days(1), slots=2, start=dt.time(14, 0)),
        full_session=_full(make_session(skin, doctor=peng, day=today + days(2), slots=2)),
        suspended_session=make_session(skin, doctor=peng, day=today + days(3), status=Session.Status.SUSPENDED),
        unreleased_session=make_session(skin, doctor=peng, day=today + days(8)),
    )
    make_session(cardio, doctor=wang, day=today + days(1), slots=3)
    return world


def _full(session: Session) -> Session:
    Slot.objects.filter(session_id=session.id).update(state=Slot.State.BOOKED)
    return session


@pytest.fixture
def account(db) -> Account:
    return make_account()


def sign_in_client(client: Client, account: Account) -> Client:
    """A test client signed in as `account` the way the sign-in page does it: a bearer token in
    the server-side session."""
    key = patient_services.issue_token(account=account, user_agent="test")
    session = client.session
    session[SESSION_KEY] = key
    session.save()
    return client


@pytest.fixture
def patient_client(client: Client, account: Account) -> Client:
    return sign_in_client(client, account)


# --- browser ----------------------------------------------------------------------------------


@pytest.fixture
def phone(browser):
    """A phone-sized page: 375×812, zh-CN, as WeChat's in-app browser on a common iPhone."""
    context = browser.new_context(
        viewport={"width": 375, "height": 812}, locale="zh-CN", device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def browser_world(browser, transactional_db, frozen_morning) -> World:
    return build_world()


def shot(page, name: str) -> Path:
    """Screenshot the whole page into docs/img/patient/<name>.png (committed with the docs)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(name="shot")
def shot_fixture():
    return shot


@pytest.fixture
def signed_in(site: str, sms_outbox: SmsOutbox):  # noqa: F811 - the outbox fixture imported above
    """`signed_in(page, account, next_path="/")`: sign in through the real form (ask for a code,
    read it from the SMS outbox, submit) and land on `next_path` (or the notices it owes)."""
    from urllib.parse import quote

    def sign(page, account: Account, next_path: str = "/") -> None:
        page.goto(f"{site}/login?next={quote(next_path)}")
        page.fill("input[name=phone]", account.phone)
        page.click("[data-send-code]")
        page.wait_for_selector('[data-code-sent="1"]')
        page.fill("input[name=code]", sms_outbox.last_code(account.phone))
        with page.expect_navigation():
            page.click("#login-form button[type=submit]:not([data-send-code])")

    return sign
