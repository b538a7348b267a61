"""The sign-in and visiting-patient API over HTTP: tokens in, masked personal data out."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.patients.models import Patient
from guahao.testing import (
    ApiClient,
    api_client,
    id_number_with_check,
    make_account,
    make_id_number,
    make_patient,
    make_phone,
)

pytestmark = pytest.mark.django_db


def _patient_body(**overrides) -> dict:
    body = {
        "name": "张三丰",
        "id_type": "resident",
        "id_number": make_id_number(),
        "phone": make_phone(),
        "relation": "self",
    }
    return body | overrides


def test_sms_code_then_login_gives_a_working_token(sms_outbox) -> None:
    anonymous = ApiClient()
    phone = make_phone()

    sent = anonymous.post("/api/v1/auth/sms-code", {"phone": phone})
    login = anonymous.post(
        "/api/v1/auth/login", {"phone": phone, "code": sms_outbox.last_code(phone)}
    )

    assert sent.status_code == 200
    assert sent.json() == {"sent": True, "retry_after": 60}
    assert login.status_code == 200
    token = login.json()["token"]
    assert ApiClient(token=token).get("/api/v1/patients").json() == []


def test_asking_again_within_a_minute_is_429_with_the_wait(sms_outbox) -> None:
    anonymous = ApiClient()
    phone = make_phone()
    anonymous.post("/api/v1/auth/sms-code", {"phone": phone})

    with clock.travel(dt.timedelta(seconds=20)):
        again = anonymous.post("/api/v1/auth/sms-code", {"phone": phone})

    assert again.status_code == 429
    assert again.json()["code"] == "sms_too_soon"
    assert again.json()["retry_after"] == 40
    assert "40秒后再试" in again.json()["message"]


def test_a_wrong_code_is_a_400_that_says_how_many_tries_are_left(sms_outbox) -> None:
    anonymous = ApiClient()
    phone = make_phone()
    anonymous.post("/api/v1/auth/sms-code", {"phone": phone})
    wrong = f"{(int(sms_outbox.last_code(phone)) + 1) % 1_000_000:06d}"

    response = anonymous.post("/api/v1/auth/login", {"phone": phone, "code": wrong})

    assert response.status_code == 400
    assert response.json() == {"code": "sms_code_wrong", "message": "验证码不正确，还可以再试4次"}


def test_a_bad_phone_is_refused_naming_the_phone(sms_outbox) -> None:
    response = ApiClient().post("/api/v1/auth/sms-code", {"phone": "12345"})

    assert response.status_code == 400
    assert response.json()["message"] == "手机号格式不正确"


def test_a_missing_field_is_a_422_naming_it() -> None:
    response = ApiClient().post("/api/v1/auth/login", {"phone": "13800138000"})

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert "code：必填" in response.json()["message"]


def test_a_body_that_is_not_json_is_refused_in_chinese() -> None:
    client = ApiClient()
    response = client.client.post(
        "/api/v1/auth/login", "{not json", content_type="application/json"
    )

    # django-ninja answers an unparseable body with HttpError(400), rendered by guahao.api.
    assert response.status_code == 400
    assert response.json() == {"code": "http_error", "message": "请求格式有误"}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Token x"}]
)
def test_patients_need_a_valid_bearer_token(headers) -> None:
    response = ApiClient().client.get("/api/v1/patients", headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_an_expired_token_is_refused() -> None:
    client = api_client(make_account())

    with clock.travel(dt.timedelta(days=31)):
        assert client.get("/api/v1/patients").status_code == 401


def test_adding_a_patient_returns_only_masked_personal_data() -> None:
    client = api_client(make_account())
    number = id_number_with_check("11010519900307123")
    phone = "13812345678"

    response = client.post(
        "/api/v1/patients", _patient_body(name="张三丰", id_number=number, phone=phone)
    )

    assert response.status_code == 201
    body = response.json()
    assert body == {
        "id": Patient.objects.get().pk,
        "name": "张*丰",
        "id_type": "resident",
        "id_number": "1" + "*" * 16 + number[-1],
        "phone": "138****5678",
        "sex": "M",
        "age": body["age"],
        "relation": "self",
    }
    assert body["age"] >= 36
    assert number not in response.content.decode()
    assert phone not in response.content.decode()


def test_id_type_defaults_to_resident() -> None:
    client = api_client(make_account())
    body = _patient_body()
    del body["id_type"]

    response = client.post("/api/v1/patients", body)

    assert response.status_code == 201
    assert response.json()["id_type"] == "resident"


def test_the_list_shows_the_accounts_patients_masked() -> None:
    account = make_account()
    patient = make_patient(account, name="欧阳娜娜", relation="self")
    make_patient(make_account(), name="别人家")

    response = api_client(account).get("/api/v1/patients")

    assert response.status_code == 200
    (only,) = response.json()
    assert only["id"] == patient.pk
    assert only["name"] == "欧**娜"
    assert only["relation"] == "self"
    assert patient.id_number not in response.content.decode()
    assert patient.phone not in response.content.decode()


def test_an_invalid_id_number_is_a_400_naming_the_field() -> None:
    client = api_client(make_account())
    number = make_id_number()
    wrong = number[:-1] + ("0" if number[-1] != "0" else "1")

    response = client.post("/api/v1/patients", _patient_body(id_number=wrong))

    assert response.status_code == 400
    assert response.json() == {"code": "invalid_id_number", "message": "证件号码校验位不正确"}


def test_an_unknown_id_type_or_relation_is_a_422() -> None:
    client = api_client(make_account())

    bad_type = client.post("/api/v1/patients", _patient_body(id_type="passport"))
    bad_relation = client.post("/api/v1/patients", _patient_body(relation="friend"))

    assert bad_type.status_code == bad_relation.status_code == 422
    assert "id_type：应为 居民身份证、港澳台居民居住证、外国人永久居留身份证" in bad_type.json()["message"]
    assert "relation：应为 本人、配偶、子女、父母、其他" in bad_relation.json()["message"]


@pytest.mark.usefixtures("roomy_add_limits")
def test_the_sixth_patient_is_a_409() -> None:
    client = api_client(make_account())
    for _ in range(5):
        assert client.post("/api/v1/patients", _patient_body(relation="other")).status_code == 201

    sixth = client.post("/api/v1/patients", _patient_body(relation="other"))

    assert sixth.status_code == 409
    assert sixth.json() == {"code": "patient_limit", "message": "每个账号最多添加5位就诊人"}


def test_deleting_a_patient_is_204_and_keeps_the_record() -> None:
    account = make_account()
    patient = make_patient(account)
    client = api_client(account)

    response = client.delete(f"/api/v1/patients/{patient.pk}")

    assert response.status_code == 204
    assert client.get("/api/v1/patients").json() == []
    assert Patient.objects.get(pk=patient.pk).removed_at is not None
    assert client.delete(f"/api/v1/patients/{patient.pk}").status_code == 404


def test_deleting_another_accounts_patient_looks_exactly_like_a_missing_one() -> None:
    patient = make_patient(make_account())
    stranger = api_client(make_account())

    theirs = stranger.delete(f"/api/v1/patients/{patient.pk}")
    missing = stranger.delete(f"/api/v1/patients/{patient.pk + 1000}")

    assert theirs.status_code == missing.status_code == 404
    assert theirs.content == missing.content
    assert theirs.json() == {"code": "patient_not_found", "message": "就诊人不存在"}
    patient.refresh_from_db()
    assert patient.removed_at is None
