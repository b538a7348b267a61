"""What every HTTP answer carries (a Content-Security-Policy), and what an oversized body gets (413
in the API's own {code, message} shape, not Django's HTML 400)."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from guahao.console.testing import superuser_client
from guahao.csp import current_policy, policy
from guahao.patients.models import Account
from guahao.testing import api_client, make_account, make_hospital, make_ip, make_patient
from guahao.web.tests.conftest import sign_in_client

pytestmark = pytest.mark.django_db


# --- oversized bodies -----------------------------------------------------------------------------


def test_a_body_over_the_limit_gets_413_in_chinese(settings):
    body = json.dumps(
        {"phone": "13800138000", "padding": "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE}
    )
    response = Client().post("/api/v1/auth/sms-code", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"code": "payload_too_large", "message": "请求内容过大"}
    assert response["Content-Security-Policy"] == current_policy()


def test_a_signed_in_request_over_the_limit_gets_413_too():
    me = api_client(make_account())
    response = me.client.post(
        "/api/v1/holds",
        json.dumps({"slot_id": 1, "padding": "x" * 70_000}),
        content_type="application/json",
        headers=me._headers(),
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_the_api_limit_is_64_kib_by_default(settings):
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 64 * 1024


# --- Content-Security-Policy ----------------------------------------------------------------------


def test_the_policy_allows_only_this_origin_and_no_inline_script():
    directives = dict(d.split(" ", 1) for d in policy("").split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    # Forms post here, and 确认并支付 is redirected on to the providers' cashiers only.
    assert directives["form-action"] == "'self' https://wx.tenpay.com https://openapi.alipay.com"
    assert "unsafe" not in policy("") and "http:" not in policy("")


def inline_code(html: str) -> list[str]:
    """Inline scripts the browser would run (JSON data blocks are not run), inline styles, and
    inline event handlers: what a policy of 'self' blocks."""
    scripts = [
        m.group(0)[:80]
        for m in re.finditer(r"<script\b([^>]*)>", html, re.I)
        if "src=" not in m.group(1) and "application/json" not in m.group(1)
    ]
    styles = re.findall(r"<style\b|\sstyle=\"", html, re.I)
    handlers = re.findall(r"\son[a-z]+=\"", html, re.I)
    return scripts + styles + handlers


def assert_guarded_page(response) -> str:
    assert response.status_code == 200, response.status_code
    assert response["Content-Security-Policy"] == current_policy()
    html = response.content.decode()
    assert inline_code(html) == []
    return html


def test_the_api_docs_page_renders_from_local_files_under_the_policy(client):
    html = assert_guarded_page(client.get("/api/v1/docs"))
    assert "/static/ninja/swagger-ui-bundle.js" in html
    assert "/static/ninja/swagger-ui-init.js" in html
    assert "cdn." not in html and "https://" not in html
    assert "开发模式" in html  # the page title


def test_api_json_carries_the_policy():
    make_hospital()
    for response in (Client().get("/api/v1/hospitals"), Client().get("/api/v1/holds/1")):
        assert response["Content-Type"].startswith("application/json")
        assert response["Content-Security-Policy"] == current_policy()


def test_other_answers_carry_the_policy_too(client):
    assert client.get("/healthz")["Content-Security-Policy"] == current_policy()
    assert client.get("/no/such/page")["Content-Security-Policy"] == current_policy()


def test_admin_pages_carry_the_policy_and_need_no_inline_code(client):
    assert_guarded_page(client.get("/admin/login/"))
    client = superuser_client("operator")
    assert_guarded_page(client.get("/admin/"))
    assert_guarded_page(client.get("/admin/catalog/hospital/"))
    assert_guarded_page(client.get("/admin/catalog/hospital/add/"))


# --- security headers and CSRF on every route ------------------------------------------------------

HEADERS = ("Content-Security-Policy", "Referrer-Policy", "X-Content-Type-Options")


def _routes(patterns=None, prefix: str = "") -> list[tuple[str, URLPattern]]:
    """Every URL pattern of guahao/urls.py (the patient pages, the API, the console and admin),
    as (pattern text from the root, pattern)."""
    found = []
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        text = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            found += _routes(entry.url_patterns, text)
        else:
            found.append((text, entry))
    return found


def _fill(text: str, values: dict[str, str]) -> str:
    """A concrete path for a pattern: each parameter by its name from real objects, else "1"."""
    text = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: values.get(m.group(1), "1"), text)
    text = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values.get(m.group(1), "1"), text)
    text = text.replace("^", "").replace("$", "").replace("\\Z", "").replace("\\", "")
    return "/" + text


def _admin_object_id(name: str | None) -> str:
    """The pk of a real object of the model an admin route (`<app>_<model>_change`) belongs to."""
    from django.contrib import admin

    for model, _ in admin.site._registry.items():
        if name and name.startswith(f"{model._meta.app_label}_{model._meta.model_name}_"):
            pk = model._default_manager.values_list("pk", flat=True).first()
            return str(pk) if pk is not None else "1"
    return "1"


@pytest.fixture
def every_route(db) -> tuple[list[tuple[str, str]], Account]:
    """(path, route name) for every route, its parameters filled with objects of a small world (a
    hospital with sessions, an account with a visiting patient and a hold), and that account."""
    from guahao.booking import services
    from guahao.web.tests.conftest import build_world

    world = build_world()
    account = make_account()
    patient = make_patient(account)
    slot = world.open_session.slots.order_by("seq").first()
    hold = services.hold_slot(account=account, slot_id=slot.id)
    values = {
        "hospital_id": str(world.hospital.pk),
        "department_id": str(world.skin.pk),
        "doctor_id": str(world.peng.pk),
        "session_id": str(world.open_session.pk),
        "slot_id": str(slot.pk),
        "hold_id": str(hold.pk),
        "patient_id": str(patient.pk),
        "app_label": "catalog",
    }
    routes = []
    for text, pattern in _routes():
        values["object_id"] = _admin_object_id(pattern.name)
        routes.append((_fill(text, values), pattern.name or ""))
    return routes, account


def test_every_answer_of_every_route_carries_the_security_headers(every_route, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # as with GUAHAO_HTTPS
    settings.SECURE_HSTS_SECONDS = 31536000
    routes, account = every_route
    assert len(routes) > 100  # the walk found the admin's and the API's routes too
    patient = sign_in_client(Client(), account)
    staff = superuser_client("walker")
    stranger = Client()
    missing = []
    for path, name in routes:
        # Over HTTPS as the signed-in patient or staff (the pages themselves); over plain HTTP as a
        # stranger (the sign-in redirects and refusals: cheap, and answers like any other).
        for secure in (True, False):
            client = (staff if path.startswith("/admin/") else patient) if secure else stranger
            headers = {"X-Forwarded-Proto": "https" if secure else "http"}
            response = client.get(path, headers=headers)
            csp = response.get("Content-Security-Policy", "")
            if "frame-ancestors 'none'" not in csp:
                missing.append(f"{path} ({name}) {response.status_code}: no frame-ancestors")
            if response.get("Referrer-Policy") not in ("same-origin", "strict-origin-when-cross-origin"):
                missing.append(f"{path} ({name}) {response.status_code}: Referrer-Policy")
            if response.get("X-Content-Type-Options") != "nosniff":
                missing.append(f"{path} ({name}) {response.status_code}: X-Content-Type-Options")
            if secure and "max-age=31536000" not in response.get("Strict-Transport-Security", ""):
                missing.append(f"{path} ({name}) {response.status_code}: no HSTS over HTTPS")
            if not secure and "Strict-Transport-Security" in response:
                missing.append(f"{path} ({name}) {response.status_code}: HSTS over plain HTTP")
    assert missing == []


def test_the_referrer_policy_is_set_explicitly(settings):
    assert settings.SECURE_REFERRER_POLICY == "same-origin"
    assert settings.SECURE_CONTENT_TYPE_NOSNIFF is True


def test_every_cookie_authenticated_post_is_refused_without_a_csrf_token(every_route):
    routes, account = every_route
    patient = sign_in_client(Client(enforce_csrf_checks=True), account)
    staff = superuser_client("poster")
    staff.handler.enforce_csrf_checks = True
    # Each has its CSRF cookie, as a forged cross-site POST would carry it; only the token is missing.
    patient.get("/")
    staff.get("/admin/")
    assert "csrftoken" in patient.cookies and "csrftoken" in staff.cookies
    accepted = []
    for path, name in routes:
        if path.startswith("/api/"):
            continue  # the API is checked below
        client = staff if path.startswith("/admin/") else patient
        response = client.post(path, {"anything": "1"})
        if response.status_code != 403:
            accepted.append(f"{path} ({name}): {response.status_code}")
    assert accepted == []


def test_no_api_route_is_authenticated_by_the_session_cookie():
    # A patient signed in on the H5 pages has the session cookie; a forged cross-site POST carries
    # it. The API must answer as to a stranger: 401 where it needs a sign-in.
    from guahao.api import api
    from guahao.patients.auth import BearerAuth

    for router_prefix, router in api._routers:
        for path_view in router.path_operations.values():
            for operation in path_view.operations:
                for auth in operation.auth_callbacks:
                    assert isinstance(auth, BearerAuth), (router_prefix, operation.view_func.__name__, auth)
    patient = sign_in_client(Client(enforce_csrf_checks=True), make_account())
    for path in ("/api/v1/holds", "/api/v1/patients"):
        assert patient.post(path, "{}", content_type="application/json").status_code == 401, path


def test_an_early_refusal_carries_the_security_headers_too(settings):
    # The browsing limit answers before any view: its 429 is dressed like every other answer.
    settings.LIMITS = {**settings.LIMITS, "browse_ip": "1/m"}
    client = Client(REMOTE_ADDR=make_ip())
    client.get("/api/v1/hospitals")
    response = client.get("/api/v1/hospitals")
    assert response.status_code == 429
    for header in HEADERS:
        assert header in response, header
    assert response["X-Content-Type-Options"] == "nosniff"
