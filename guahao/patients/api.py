"""Sign-in (/api/v1/auth) and visiting patients (/api/v1/patients). Personal data leaves the server
masked: 张*三, 138****1234, 1****************4."""

from __future__ import annotations

import datetime as dt

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from guahao import clock, pii
from guahao.limits.clientip import client_ip
from guahao.patients import selectors, services
from guahao.patients.auth import bearer
from guahao.patients.idcard import age_on
from guahao.patients.models import Patient

auth_router = Router(tags=["登录"])
router = Router(auth=bearer, tags=["就诊人"])


# --- sign-in ----------------------------------------------------------------------------------


class SmsCodeIn(Schema):
    phone: str = Field(max_length=32, description="手机号（中国大陆）")
    captcha_key: str = Field("", max_length=64, description="图形验证码编号（要求图形验证码时）")
    captcha_answer: str = Field("", max_length=16, description="图形验证码答案")


class SmsCodeOut(Schema):
    sent: bool
    retry_after: int = Field(description="多少秒后可以再次获取")


class LoginIn(Schema):
    phone: str = Field(max_length=32, description="手机号")
    code: str = Field(max_length=16, description="短信验证码（6位数字）")


class TokenOut(Schema):
    token: str = Field(description="Bearer 令牌：30天未使用或登录满90天后失效")


class DeviceOut(Schema):
    id: int
    created_at: dt.datetime = Field(description="登录时间")
    last_used_at: dt.datetime | None = Field(description="最近使用时间")
    user_agent: str = Field(description="设备（浏览器标识）")
    current: bool = Field(description="是否为本次请求所用的登录")


@auth_router.post(
    "/sms-code",
    response=SmsCodeOut,
    summary="获取短信验证码",
    description="同一地址请求较多时，医院可要求先输入图形验证码：此时返回 400 captcha_required，"
    "附 captcha_key 与 captcha_image（图片地址），带上答案重新请求即可。",
)
def send_sms_code(request: HttpRequest, payload: SmsCodeIn) -> dict:
    services.send_sms_code(
        phone=payload.phone,
        client_ip=client_ip(request),
        captcha_key=payload.captcha_key,
        captcha_answer=payload.captcha_answer,
    )
    return {"sent": True, "retry_after": int(services.SMS_RESEND_INTERVAL.total_seconds())}


@auth_router.post("/login", response=TokenOut, summary="短信验证码登录")
def login(request: HttpRequest, payload: LoginIn) -> dict:
    token = services.login(
        phone=payload.phone,
        code=payload.code,
        client_ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", ""),
    )
    return {"token": token}


@auth_router.post("/logout", auth=bearer, response={204: None}, summary="退出登录")
def logout(request: HttpRequest) -> Status[None]:
    services.logout(token=request.auth_token)
    return Status(204, None)


@auth_router.get("/tokens", auth=bearer, response=list[DeviceOut], summary="已登录的设备")
def list_tokens(request: HttpRequest) -> list[dict]:
    return [
        {
            "id": token.pk,
            "created_at": token.created_at,
            "last_used_at": token.last_used_at,
            "user_agent": token.user_agent,
            "current": token.pk == request.auth_token.pk,
        }
        for token in selectors.tokens_of(request.auth)
    ]


@auth_router.delete("/tokens/{token_id}", auth=bearer, response={204: None}, summary="退出某台设备")
def end_token(request: HttpRequest, token_id: int) -> Status[None]:
    services.end_token(account=request.auth, token_id=token_id)
    return Status(204, None)


# --- visiting patients ------------------------------------------------------------------------


class PatientIn(Schema):
    name: str = Field(max_length=64, description="姓名，与证件一致")
    id_type: Patient.IdType = Field(Patient.IdType.RESIDENT, description="证件类型")
    id_number: str = Field(max_length=64, description="证件号码")
    phone: str = Field(max_length=32, description="就诊人手机号")
    relation: Patient.Relation = Field(description="与账号的关系")


class PatientOut(Schema):
    id: int
    name: str = Field(description="姓名（脱敏）")
    id_type: str
    id_number: str = Field(description="证件号码（脱敏）")
    phone: str = Field(description="手机号（脱敏）")
    sex: str = Field(description="M 男 / F 女")
    age: int
    relation: str


def _present(patient: Patient) -> dict:
    # Only this account's own entries: a record is never shared with another account.
    return {
        "id": patient.pk,
        "name": pii.mask_name(patient.name),
        "id_type": patient.id_type,
        "id_number": pii.mask_id_number(patient.id_number),
        "phone": pii.mask_phone(patient.phone),
        "sex": patient.sex,
        "age": age_on(patient.birth_date, clock.today()),
        "relation": patient.relation,
    }


@router.get("", response=list[PatientOut], summary="我的就诊人")
def list_patients(request: HttpRequest) -> list[dict]:
    return [_present(patient) for patient in selectors.patients_of(request.auth)]


@router.post(
    "",
    response={201: PatientOut},
    summary="添加就诊人（实名核验）",
    description="每次添加都经实名核验。按账号和来源地址限制尝试次数（默认每小时5次、每天10次），"
    "超出返回 429 及 Retry-After。",
)
def add_patient(request: HttpRequest, payload: PatientIn) -> Status[dict]:
    patient = services.add_patient(
        account=request.auth,
        name=payload.name,
        id_type=payload.id_type,
        id_number=payload.id_number,
        phone=payload.phone,
        relation=payload.relation,
        client_ip=client_ip(request),
    )
    return Status(201, _present(patient))


@router.delete("/{patient_id}", response={204: None}, summary="移除就诊人")
def remove_patient(request: HttpRequest, patient_id: int) -> Status[None]:
    services.remove_patient(account=request.auth, patient_id=patient_id)
    return Status(204, None)
