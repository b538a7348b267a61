"""What a new user of the API meets first: validation errors that name the field and its limit or
allowed values in Chinese, and JSON (not Django's HTML) for unknown paths and wrong methods."""

from __future__ import annotations

import pytest

from guahao.testing import api_client, make_account, make_department, make_hospital
from guahao.validation import describe_validation_errors


@pytest.fixture
def me(db):
    return api_client(make_account())


@pytest.mark.parametrize(
    "method,path,body,field,expected",
    [
        ("get", "/api/v1/departments/1/availability?days=15", None, "days", "最多 14 天"),
        ("get", "/api/v1/departments/1/availability?days=0", None, "days", "最少 1 天"),
        ("get", "/api/v1/departments/1/availability?days=x", None, "days", "应为整数"),
        ("post", "/api/v1/patients", {"name": "张三", "id_number": "1", "phone": "1", "relation": "friend"},
         "relation", "应为 本人、配偶、子女、父母、其他"),
        ("post", "/api/v1/patients", {"name": "张" * 65, "id_number": "1", "phone": "1", "relation": "self"},
         "name", "最多 64 个字"),
        ("post", "/api/v1/patients", {"id_number": "1", "phone": "1", "relation": "self"}, "name", "必填"),
        ("post", "/api/v1/holds/1/confirm", {"patient_id": 1, "channel": "cash"}, "channel", "应为 微信支付、支付宝、银行卡"),
        ("post", "/api/v1/holds/1/confirm", {"patient_id": "x", "channel": "wechat"}, "patient_id", "应为整数"),
        ("get", "/api/v1/registrations?status=nonsense", None, "status",
         "应为 预约成功、已取号、已就诊、爽约、退费中、已取消"),
        ("post", "/api/v1/holds", {"session_id": 1, "window_start": "8点"}, "window_start",
         "应为时间（ISO 8601，如 2025-03-01T08:00:00+08:00）"),
        ("post", "/api/v1/auth/sms-code", {"phone": "1" * 33}, "phone", "最多 32 个字"),
    ],
)
def test_a_validation_error_names_the_field_and_its_limit_or_choices(me, method, path, body, field, expected):
    response = me.post(path, body) if method == "post" else me.get(path)
    assert response.status_code == 422
    payload = response.json()
    assert payload["code"] == "validation_error"
    assert payload["fields"][field] == expected
    assert f"{field}：{expected}" in payload["message"]


def test_every_field_in_error_is_listed_in_one_sentence(me):
    response = me.post("/api/v1/patients", {"name": "张" * 65, "id_number": "1", "phone": "1", "relation": "x"})
    assert response.json()["message"] == "请求参数有误（name：最多 64 个字；relation：应为 本人、配偶、子女、父母、其他）"


def test_limits_of_other_kinds_are_stated_too():
    message, fields = describe_validation_errors(
        [
            {"type": "greater_than", "loc": ("body", "amount"), "ctx": {"gt": 0.0}},
            {"type": "less_than", "loc": ("body", "ratio"), "ctx": {"lt": 1}},
            {"type": "string_too_short", "loc": ("body", "code"), "ctx": {"min_length": 6}},
            {"type": "too_long", "loc": ("body", "ids"), "ctx": {"max_length": 3}},
            {"type": "literal_error", "loc": ("query", "mode"), "ctx": {"expected": "'a' or 'b'"}},
            {"type": "no_such_type", "loc": ("body", "other")},
        ]
    )
    assert fields == {
        "amount": "应大于 0",
        "ratio": "应小于 1",
        "code": "至少 6 个字",
        "ids": "最多 3 项",
        "mode": "应为 a、b",
        "other": "格式不正确",
    }
    assert message.startswith("请求参数有误（amount：应大于 0；")


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/api/v1/nope"),
        ("get", "/api/v2/x"),
        ("post", "/api/v2/x"),
        ("get", "/api/"),
        ("get", "/api/v1/hospitals/"),
        ("delete", "/api/v1/nope/1"),
    ],
)
def test_unknown_api_paths_answer_json_404(me, method, path):
    response = getattr(me.client, method)(path)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"code": "not_found", "message": "接口不存在"}


def test_a_wrong_method_on_a_known_path_answers_json_405(me):
    response = me.client.put("/api/v1/holds", "{}", content_type="application/json")
    assert response.status_code == 405
    assert response.json() == {"code": "method_not_allowed", "message": "不支持此请求方法"}
    assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_pages_outside_the_api_are_left_alone(db):
    # The console and the patient pages keep their own (HTML) answers.
    response = api_client().client.get("/admin/")
    assert response.status_code == 302
    assert not response.get("Content-Type", "").startswith("application/json")


def test_get_holds_is_no_longer_a_405(me):
    assert me.get("/api/v1/holds").status_code == 200


def test_the_hospital_detail_is_served(db):
    hospital = make_hospital()
    make_department(hospital)
    assert api_client().get(f"/api/v1/hospitals/{hospital.id}").json()["name"] == hospital.name
    missing = api_client().get("/api/v1/hospitals/999999")
    assert (missing.status_code, missing.json()["code"]) == (404, "hospital_not_found")
