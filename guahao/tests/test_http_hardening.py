"""What every HTTP answer carries (a Content-Security-Policy), and what an oversized body gets (413
in the API's own {code, message} shape, not Django's HTML 400)."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from guahao.console.testing import superuser_client
from guahao.csp import current_policy, policy
from guahao.testing import api_client, make_account, make_hospital

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
