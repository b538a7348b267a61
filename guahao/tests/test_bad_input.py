"""Bad input gets a clear error, never a 500: a sweep over the API's paths with hostile values."""

from __future__ import annotations

import pytest

from guahao.testing import api_client, make_account

HUGE = 10**20


@pytest.fixture
def me(db):
    return api_client(make_account())


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("get", f"/api/v1/holds/{HUGE}", None),
        ("get", f"/api/v1/registrations/{HUGE}", None),
        ("post", f"/api/v1/registrations/{HUGE}/cancel", None),
        ("delete", f"/api/v1/patients/{HUGE}", None),
        ("get", f"/api/v1/hospitals/{HUGE}/departments", None),
        ("get", f"/api/v1/departments/{HUGE}/availability", None),
        ("get", f"/api/v1/sessions/{HUGE}/slots", None),
        ("post", "/api/v1/holds", {"slot_id": HUGE}),
        ("post", "/api/v1/holds", {"session_id": 1, "window_start": "not a time"}),
        ("post", "/api/v1/holds", {"slot_id": -1}),
        ("post", "/api/v1/holds/1/confirm", {"patient_id": "x", "channel": "cash"}),
        ("post", "/api/v1/patients", {"name": "", "id_number": "x" * 500, "phone": "1" * 40}),
        ("post", "/api/v1/auth/login", {"phone": "13800138000", "code": "1" * 1000}),
        ("get", "/api/v1/departments/1/availability?days=1000", None),
        ("get", "/api/v1/registrations?status=nonsense", None),
    ],
)
def test_hostile_values_get_a_chinese_error_not_a_500(me, method, path, body):
    response = me.post(path, body) if method == "post" else getattr(me, method)(path)
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:200])
    payload = response.json()
    assert payload["code"]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in payload["message"]), payload


def test_a_body_that_is_not_json_is_refused_clearly(me):
    response = me.client.post(
        "/api/v1/holds", "{not json", content_type="application/json", headers=me._headers()
    )
    assert response.status_code == 400
    assert response.json()["message"]
