"""The patient pages through Django's test client: who may see what, and what each page says."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from guahao.catalog import services as catalog_services
from guahao.catalog.models import Notice
from guahao.csp import current_policy
from guahao.patients.models import AuthToken
from guahao.patients.selectors import tokens_of
from guahao.web.auth import SESSION_KEY, account_required
from guahao.web.tests.conftest import sign_in_client

pytestmark = pytest.mark.django_db


def text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


# --- home, layout, CSP ----------------------------------------------------------------------------


def test_home_shows_the_hospital_campuses_and_notices(client: Client, world) -> None:
    response = client.get("/")
    assert response.status_code == 200
    page = text(response)
    assert "杭州市第一人民医院" in page and "总院区" in page and "挂号须知" in page
    assert 'href="/me/registrations"' in page and 'href="/me/patients"' in page  # the tab bar
    assert "长辈版" in page


def test_pages_carry_the_strict_csp_and_no_inline_script_or_style(client: Client, world) -> None:
    for url in ["/", "/login", "/notices", "/departments", f"/departments/{world.skin.id}", "/search?q=皮"]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response["Content-Security-Policy"] == current_policy()
        html = response.content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert " style=" not in html and "hx-on" not in html, url
        assert 'name="htmx-config"' in html and "includeIndicatorStyles" in html
        assert "user-scalable=no" not in html and "maximum-scale" not in html


def test_html_is_gzipped_for_browsers_that_accept_it(client: Client, world) -> None:
    response = client.get("/", HTTP_ACCEPT_ENCODING="gzip")
    assert response["Content-Encoding"] == "gzip"


# --- sign-in ------------------------------------------------------------------------------------


def test_signing_in_through_the_form_is_a_device_and_survives_reloads(client: Client, world, sms_outbox) -> None:
    phone = "13912345678"
    response = client.post("/login/code", {"phone": phone})
    assert response.status_code == 200 and "验证码已发送" in text(response)
    response = client.post("/login", {"phone": phone, "code": sms_outbox.last_code(phone), "next": "/departments"})
    assert response.status_code == 302
    # First sign-in owes the notices: read them first, then on to where the patient was going.
    assert response["Location"] == "/notices?next=%2Fdepartments"
    key = client.session[SESSION_KEY]
    token = AuthToken.objects.get()
    assert len(tokens_of(token.account)) == 1 and key  # one device in GET /api/v1/auth/tokens
    assert "退出登录" in text(client.get("/"))
    assert "退出登录" in text(client.get("/"))  # a reload keeps the session


def test_a_wrong_code_is_answered_on_the_form_in_chinese(client: Client, world, sms_outbox) -> None:
    phone = "13912345679"
    client.post("/login/code", {"phone": phone})
    response = client.post("/login", {"phone": phone, "code": "000000"})
    if sms_outbox.last_code(phone) == "000000":  # one in a million
        return
    assert response.status_code == 400 and "验证码不正确" in text(response)
    assert SESSION_KEY not in client.session


def test_send_code_by_htmx_swaps_only_the_status(client: Client, world, sms_outbox) -> None:
    response = client.post("/login/code", {"phone": "13912345670"}, HTTP_HX_REQUEST="true")
    assert "<html" not in response.content.decode() and 'data-code-sent="1"' in response.content.decode()


def test_the_captcha_is_shown_when_the_address_needs_one(client: Client, world, sms_outbox, settings) -> None:
    settings.CAPTCHA_ENABLED = True
    settings.LIMITS = settings.LIMITS | {"captcha_ip": "1/h"}
    client.post("/login/code", {"phone": "13912345671"})
    response = client.post("/login/code", {"phone": "13912345672"})
    page = text(response)
    assert "请输入图形验证码" in page and 'name="captcha_key"' in page and "/captcha/image/" in page


def test_sign_out_ends_the_device_and_flushes_the_session(patient_client: Client, account, world) -> None:
    assert tokens_of(account).count() == 1
    response = patient_client.post("/logout")
    assert response.status_code == 302
    assert tokens_of(account).count() == 0
    assert SESSION_KEY not in patient_client.session


def test_an_ended_device_is_signed_out_of_the_pages(patient_client: Client, account, world) -> None:
    AuthToken.objects.filter(account=account).delete()  # ended from another device
    assert "退出登录" not in text(patient_client.get("/"))


def test_the_next_parameter_never_leaves_the_site(client: Client, world, sms_outbox, account) -> None:
    catalog_services.acknowledge_notice(account=account, notice_id=Notice.objects.get().id)
    client.post("/login/code", {"phone": account.phone})
    response = client.post(
        "/login", {"phone": account.phone, "code": sms_outbox.last_code(account.phone), "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"


# --- account_required ---------------------------------------------------------------------------


@account_required
def _private(request):
    from django.http import HttpResponse

    return HttpResponse(f"account {request.account.pk} token {request.auth_token.pk}")


def test_account_required_sends_signed_out_visitors_to_sign_in(rf, db) -> None:
    from django.contrib.sessions.backends.db import SessionStore

    request = rf.get("/me/registrations?x=1")
    request.session = SessionStore()
    response = _private(request)
    assert response.status_code == 302 and response["Location"] == "/login?next=%2Fme%2Fregistrations%3Fx%3D1"
    request = rf.get("/me/registrations", HTTP_HX_REQUEST="true")
    request.session = SessionStore()
    response = _private(request)
    assert response.status_code == 204 and response["HX-Redirect"] == "/login?next=%2Fme%2Fregistrations"


def test_account_required_sets_the_account_and_token(patient_client: Client, account, world, rf) -> None:
    request = rf.get("/x")
    request.session = patient_client.session
    response = _private(request)
    assert response.content.decode().startswith(f"account {account.pk} token ")


# --- notices ------------------------------------------------------------------------------------


def test_notices_must_be_acknowledged_and_again_after_a_new_version(patient_client: Client, account, world) -> None:
    page = text(patient_client.get("/"))
    assert "预约挂号前，请先阅读并确认" in page
    session_link = f'href="/notices?next=/sessions/{world.open_session.id}"'
    assert session_link in text(patient_client.get(f"/departments/{world.skin.id}"))
    notice = Notice.objects.get()
    response = patient_client.post("/notices", {"notice": [notice.id], "next": "/departments"})
    assert response.status_code == 302 and response["Location"] == "/departments"
    assert "预约挂号前" not in text(patient_client.get("/"))
    assert f'href="/sessions/{world.open_session.id}"' in text(patient_client.get(f"/departments/{world.skin.id}"))
    # A new version of a notice (and the epidemic notice) must be read again.
    catalog_services.publish_notice(hospital=world.hospital, kind=Notice.Kind.REGISTRATION, title="挂号须知", body="新版")
    catalog_services.publish_notice(hospital=world.hospital, kind=Notice.Kind.EPIDEMIC, title="防疫须知", body="请戴口罩")
    page = text(patient_client.get("/notices"))
    assert "新版" in page and "请戴口罩" in page and page.count("待确认") == 2


def test_acknowledging_needs_a_signed_in_account(client: Client, world) -> None:
    response = client.post("/notices", {"notice": [Notice.objects.get().id]})
    assert response.status_code == 302 and response["Location"].startswith("/login?next=")


# --- departments and schedules -------------------------------------------------------------------


def test_two_levels_show_a_left_list_and_a_right_list(client: Client, world) -> None:
    page = text(client.get(f"/departments?root={world.medicine.id}"))
    assert "twopane" in page and "皮肤科" in page and "内科" in page
    assert f'href="/departments/{world.cardio.id}"' in page


def test_one_level_is_a_plain_list(client: Client, world) -> None:
    world.hospital.browse_level = 1
    world.hospital.save()
    page = text(client.get("/departments"))
    assert "twopane" not in page and f'href="/departments/{world.medicine.id}"' in page


def test_the_strip_says_in_words_what_each_date_offers(client: Client, world) -> None:
    page = text(client.get(f"/departments/{world.skin.id}"))
    tomorrow, in2, in3, in8 = (world.day(n) for n in (1, 2, 3, 8))
    assert "有号(6)" in page  # tomorrow: 4 in the morning + 2 in the afternoon
    assert "约满" in page and "停诊" in page
    release = world.day(1)
    assert f"{release.month}月{release.day}日 07:00 放号" in page  # the date after the window
    assert "无号" not in page
    for day in (tomorrow, in2, in3, in8):
        assert f'data-date="{day.isoformat()}"' in page
    # 8 days shown beyond today's: the window (7) and the next release.
    assert page.count('class="strip__day') == 9


def test_the_chosen_date_lists_doctors_by_period_with_fee_type_and_count(client: Client, world) -> None:
    page = text(client.get(f"/departments/{world.skin.id}?date={world.day(1).isoformat()}"))
    assert "上午" in page and "下午" in page and page.index("上午") < page.index("下午")
    assert "彭飞" in page and "副主任医师" in page and "¥25.00" in page and "普通号" in page and "余4" in page
    assert f'href="/sessions/{world.open_session.id}"' in page


def test_choosing_a_date_by_htmx_swaps_the_schedule_only(client: Client, world) -> None:
    response = client.get(
        f"/departments/{world.skin.id}?date={world.day(3).isoformat()}", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="schedule"
    )
    html = response.content.decode()
    assert "<html" not in html and html.lstrip().startswith('<div id="schedule">')
    assert "停诊" in html and "/sessions/" not in html


def test_an_unreleased_date_says_when_it_opens(client: Client, world) -> None:
    page = text(client.get(f"/doctors/{world.peng.id}?date={world.day(8).isoformat()}"))
    opens = world.day(1)
    assert f"{opens.month}月{opens.day}日 07:00 放号" in page and "彭飞" in page


def test_a_stranger_department_or_doctor_is_the_error_page(client: Client, world) -> None:
    response = client.get("/departments/999999")
    assert response.status_code == 404
    page = text(response)
    assert "科室不存在" in page and "0571-87065701" in page and "刷新" in page and "Traceback" not in page


def test_an_unexpected_error_is_the_same_page_without_a_trace(client: Client, world, monkeypatch) -> None:
    from guahao.web import views

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(views.catalog, "department_tree", broken)
    client.raise_request_exception = False
    response = client.get("/departments")
    assert response.status_code == 500
    page = text(response)
    assert "页面出错了" in page and "secret internals" not in page and "0571-87065701" in page


# --- search -------------------------------------------------------------------------------------


def test_search_finds_departments_and_doctors_by_chinese_name(client: Client, world) -> None:
    page = text(client.get("/search?q=皮肤"))
    assert f'href="/departments/{world.skin.id}"' in page
    page = text(client.get("/search?q=彭"))
    assert f'href="/doctors/{world.peng.id}"' in page


def test_search_by_pinyin_initials_when_the_catalog_supports_it(client: Client, world) -> None:
    pytest.importorskip("guahao.catalog.selectors").__dict__.get("search") or pytest.skip("pinyin search not landed")
    page = text(client.get("/search?q=pfk"))
    assert f'href="/departments/{world.skin.id}"' in page


def test_search_without_results_says_so(client: Client, world) -> None:
    assert "没有找到" in text(client.get("/search?q=不存在的科"))


# --- 长辈版 ---------------------------------------------------------------------------------------


def test_the_elder_switch_is_remembered_for_a_year(client: Client, world) -> None:
    response = client.post("/elder", {"next": "/departments"})
    assert response.status_code == 302 and response["Location"] == "/departments"
    cookie = response.cookies["elder"]
    assert cookie.value == "1" and int(cookie["max-age"]) >= 365 * 24 * 3600
    assert 'class="page elder"' in text(client.get("/"))
    client.post("/elder")
    assert 'class="page"' in text(client.get("/"))


def test_sign_in_client_helper_matches_the_form(patient_client: Client, account) -> None:
    assert patient_client.session[SESSION_KEY]


def test_sign_in_client_is_usable_with_any_client(db, world) -> None:
    from guahao.testing import make_account

    client = sign_in_client(Client(), make_account())
    assert "退出登录" in text(client.get("/"))
