"""Admission control in a release burst: past ADMISSION_ACTIVE requests executing at once, an answer
of 429 with Retry-After and a Chinese message at once, never a wait until the client times out."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client
from django.urls import include, path

from guahao import admission
from guahao.admission import BUSY_MESSAGE
from guahao.tests.test_metrics import scrape, value

pytestmark = pytest.mark.django_db

# A view that stays inside its permit until the test lets it go; no database, so it runs on any
# thread beside the test's transaction.
entered = threading.Event()
release = threading.Event()


def blocking_view(request: HttpRequest) -> HttpResponse:
    entered.set()
    release.wait(timeout=10)
    return JsonResponse({"done": True})


def quick_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"done": True})


urlpatterns = [
    path("api/v1/_test/block", blocking_view),
    path("api/v1/_test/quick", quick_view),
    path("", include("guahao.urls")),
]

ADMISSION = dict(ROOT_URLCONF=__name__, ADMISSION_ACTIVE=1, ADMISSION_QUEUE=1, ADMISSION_WAIT_MS=50, ADMISSION_RETRY_AFTER=1)


@pytest.fixture
def busy(settings):
    """One request executing (the only permit taken) until the test ends."""
    for name, setting in ADMISSION.items():
        setattr(settings, name, setting)
    entered.clear()
    release.clear()
    answers: list[int] = []
    holder = threading.Thread(target=lambda: answers.append(Client().post("/api/v1/_test/block").status_code))
    holder.start()
    assert entered.wait(timeout=10), "the blocking request never started"
    yield answers
    release.set()
    holder.join(timeout=10)


def test_past_the_permits_the_api_answers_429_at_once_with_a_chinese_message(busy):
    started = time.perf_counter()
    response = Client().get("/api/v1/_test/quick")
    elapsed = time.perf_counter() - started

    assert response.status_code == 429
    assert elapsed < 1.0, elapsed  # the 50 ms wait, never a client timeout
    assert response["Retry-After"] == "1"
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response.json() == {"code": "busy", "message": BUSY_MESSAGE}
    assert BUSY_MESSAGE.encode() in response.content  # Chinese as is, not \\u escapes
    assert response["Cache-Control"] == "no-store"
    assert "Content-Security-Policy" in response  # the outermost middleware still dresses it


def test_patient_pages_get_a_chinese_page_with_the_same_message(busy):
    response = Client().get("/")
    assert response.status_code == 429
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Retry-After"] == "1"
    html = response.content.decode()
    assert BUSY_MESSAGE in html and 'lang="zh-CN"' in html
    assert "<style" not in html and "<script" not in html  # nothing the CSP would block


def test_once_the_permit_is_back_requests_pass_again(busy):
    assert Client().get("/api/v1/_test/quick").status_code == 429
    release.set()
    deadline = time.monotonic() + 5
    while busy == [] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert busy == [200]  # the admitted request finished normally
    assert Client().get("/api/v1/_test/quick").status_code == 200


def test_a_request_waits_for_a_permit_freed_within_the_wait(busy, settings):
    settings.ADMISSION_WAIT_MS = 5000
    answers: list[int] = []
    # A POST: the browsing limit (GETs) would write from this thread beside the test's transaction.
    waiting = threading.Thread(target=lambda: answers.append(Client().post("/api/v1/_test/quick").status_code))
    waiting.start()
    time.sleep(0.2)  # it is in the line now
    # The line holds as many requests as there are permits: the next one is refused without waiting.
    started = time.perf_counter()
    assert Client().get("/api/v1/_test/quick").status_code == 429
    assert time.perf_counter() - started < 1.0
    release.set()
    waiting.join(timeout=10)
    assert answers == [200]


def test_health_metrics_and_static_files_pass_while_saturated(busy):
    assert Client().get("/healthz").status_code == 200
    assert Client().get("/metrics").status_code == 200
    assert Client().get("/static/web/app.css").status_code != 429
    assert Client().post("/api/v1/payments/notify/wechatpay/1", data=b"{}", content_type="application/json").status_code != 429


def test_refusals_are_counted_with_the_429s_of_their_route(busy):
    before = scrape()
    assert Client().get("/api/v1/_test/quick").status_code == 429
    assert Client().get("/api/v1/_test/quick").status_code == 429
    after = scrape()
    route = "/api/v1/_test/quick"
    assert value(after, "guahao_http_429_total", route=route) == value(before, "guahao_http_429_total", route=route) + 2
    assert value(after, "guahao_admission_refused_total") == value(before, "guahao_admission_refused_total") + 2


def test_a_burst_of_refusals_logs_one_warning(busy, caplog, monkeypatch):
    monkeypatch.setattr(admission, "shedding", admission._Shedding())  # no warning earlier in this process
    with caplog.at_level(logging.DEBUG, logger="guahao.admission"):
        for _ in range(5):
            assert Client().get("/api/v1/_test/quick").status_code == 429
    records = [r for r in caplog.records if r.name == "guahao.admission"]
    assert [r.levelno for r in records].count(logging.DEBUG) == 5
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].refused == 1


def test_zero_permits_turns_admission_control_off(busy, settings):
    settings.ADMISSION_ACTIVE = 0
    assert Client().get("/api/v1/_test/quick").status_code == 200


# --- one client's share ---------------------------------------------------------------------------


@pytest.fixture
def one_running(settings):
    """Permits to spare (four), a share of one, and one request of a client (a bearer token, on
    100.64.7.10) executing until the test ends."""
    for name, setting in ADMISSION.items():
        setattr(settings, name, setting)
    settings.ADMISSION_ACTIVE = 4
    settings.ADMISSION_SHARE = 1
    entered.clear()
    release.clear()
    answers: list[int] = []
    flooder = Client(REMOTE_ADDR="100.64.7.10", HTTP_AUTHORIZATION="Bearer flooder-token")
    holder = threading.Thread(target=lambda: answers.append(flooder.post("/api/v1/_test/block").status_code))
    holder.start()
    assert entered.wait(timeout=10), "the blocking request never started"
    yield answers
    release.set()
    holder.join(timeout=10)


def test_a_client_with_its_share_running_is_refused_at_once_though_permits_are_free(one_running):
    again = Client(REMOTE_ADDR="100.64.7.10", HTTP_AUTHORIZATION="Bearer flooder-token")
    started = time.perf_counter()
    response = again.post("/api/v1/_test/quick")
    assert response.status_code == 429
    assert time.perf_counter() - started < 1.0
    assert response.json() == {"code": "busy", "message": BUSY_MESSAGE}
    assert response["Retry-After"] == "1"


def test_the_same_account_from_another_address_is_the_same_client(one_running):
    elsewhere = Client(REMOTE_ADDR="100.70.1.2", HTTP_AUTHORIZATION="Bearer flooder-token")
    assert elsewhere.post("/api/v1/_test/quick").status_code == 429


def test_another_account_behind_the_same_24_shares_its_networks_share(one_running):
    neighbour = Client(REMOTE_ADDR="100.64.7.99", HTTP_AUTHORIZATION="Bearer other-token")
    assert neighbour.post("/api/v1/_test/quick").status_code == 429


def test_other_patients_pass_while_one_client_has_its_share(one_running):
    for n in range(3):
        patient = Client(REMOTE_ADDR=f"100.65.{n}.1", HTTP_AUTHORIZATION=f"Bearer patient-{n}")
        assert patient.post("/api/v1/_test/quick").status_code == 200


def test_the_share_comes_back_when_the_request_ends(one_running):
    release.set()
    deadline = time.monotonic() + 5
    while one_running == [] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert one_running == [200]
    again = Client(REMOTE_ADDR="100.64.7.10", HTTP_AUTHORIZATION="Bearer flooder-token")
    assert again.post("/api/v1/_test/quick").status_code == 200


def test_without_a_token_the_address_is_the_client(one_running, settings):
    settings.ADMISSION_SHARE = 2  # the network has room for one more: only the address is full
    browser = Client(REMOTE_ADDR="100.64.7.10")
    assert browser.post("/api/v1/_test/quick").status_code == 200  # not the token's client
    entered.clear()
    second = threading.Thread(target=lambda: browser.post("/api/v1/_test/block"))
    second.start()
    try:
        assert entered.wait(timeout=10)
        # The address has two running (the token's and this one): its share of two is taken.
        assert Client(REMOTE_ADDR="100.64.7.10").post("/api/v1/_test/quick").status_code == 429
    finally:
        release.set()
        second.join(timeout=10)


def test_loopback_clients_and_a_share_of_zero_are_not_limited(one_running, settings):
    assert Client().post("/api/v1/_test/quick").status_code == 200  # 127.0.0.1: not told apart
    settings.ADMISSION_SHARE = 0
    again = Client(REMOTE_ADDR="100.64.7.10", HTTP_AUTHORIZATION="Bearer flooder-token")
    assert again.post("/api/v1/_test/quick").status_code == 200


def test_a_share_given_back_early_with_the_permit_is_not_lost():
    gate = admission.Gate(2)
    keys = ("token:x", "net:100.64.7.0/24")
    assert gate.enter(0.01, keys, share=1)
    assert not gate.enter(0.01, keys, share=1)
    gate.leave()  # waiting_outside: the permit goes back, the share stays until the request ends
    assert not gate.enter(0.01, keys, share=1)
    gate.leave_share(keys)
    assert gate.enter(0.01, keys, share=1)
    gate.leave(keys)
    assert gate._by_key == {}
