"""Sign-in (/api/v1/auth) and visiting patients (/api/v1/patients). Personal data leaves the server
masked: 张*三, 138****1234, 110***********1234."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from guahao import clock, pii
from guahao.patients import selectors, services
from guahao.patients.auth import bearer
from guahao.patients.idcard import age_on
from guahao.patients.models import AccountPatient, Patient

auth_router = Router(tags=["登录"])
router = Router(auth=bearer, tags=["就诊人"])


# --- sign-in ----------------------------------------------------------------------------------


class SmsCodeIn(Schema):
    phone: str = Field(max_length=32, description="手机号（中国大陆）")


class SmsCodeOut(Schema):
    sent: bool
    retry_after: int = Field(description="多少秒后可以再次获取")


class LoginIn(Schema):
    phone: str = Field(max_length=32, description="手机号")
    code: str = Field(max_length=16, description="短信验证码（6位数字）")


class TokenOut(Schema):
    token: str = Field(description="Bearer 令牌，30天有效")


@auth_router.post("/sms-code", response=SmsCodeOut, summary="获取短信验证码")
def send_sms_code(request: HttpRequest, payload: SmsCodeIn) -> dict:
    services.send_sms_code(phone=payload.phone)
    return {"sent": True, "retry_after": int(services.SMS_RESEND_INTERVAL.total_seconds())}


@auth_router.post("/login", response=TokenOut, summary="短信验证码登录")
def login(request: HttpRequest, payload: LoginIn) -> dict:
    return {"token": services.login(phone=payload.phone, code=payload.code)}


# --- visiting patients ------------------------------------------------------------------------


class PatientIn(Schema):
    name: str = Field(max_length=64, description="姓名，与证件一致")
    id_type: Patient.IdType = Field(Patient.IdType.RESIDENT, description="证件类型")
    id_number: str = Field(max_length=64, description="证件号码")
    phone: str = Field(max_length=32, description="就诊人手机号")
    relation: AccountPatient.Relation = Field(description="与账号的关系")


class PatientOut(Schema):
    id: int
    name: str = Field(description="姓名（脱敏）")
    id_type: str
    id_number: str = Field(description="证件号码（脱敏）")
    phone: str = Field(description="手机号（脱敏）")
    sex: str = Field(description="M 男 / F 女")
    age: int
    relation: str


def _present(link: AccountPatient) -> dict:
    patient = link.patient
    return {
        "id": patient.pk,
        "name": pii.mask_name(patient.name),
        "id_type": patient.id_type,
        "id_number": pii.mask_id_number(patient.id_number),
        "phone": pii.mask_phone(patient.phone),
        "sex": patient.sex,
        "age": age_on(patient.birth_date, clock.today()),
        "relation": link.relation,
    }


@router.get("", response=list[PatientOut], summary="我的就诊人")
def list_patients(request: HttpRequest) -> list[dict]:
    return [_present(link) for link in selectors.patients_of(request.auth)]


@router.post("", response={201: PatientOut}, summary="添加就诊人（实名核验）")
def add_patient(request: HttpRequest, payload: PatientIn) -> Status[dict]:
    link = services.add_patient(
        account=request.auth,
        name=payload.name,
        id_type=payload.id_type,
        id_number=payload.id_number,
        phone=payload.phone,
        relation=payload.relation,
    )
    return Status(201, _present(link))


@router.delete("/{patient_id}", response={204: None}, summary="移除就诊人")
def remove_patient(request: HttpRequest, patient_id: int) -> Status[None]:
    services.remove_patient(account=request.auth, patient_id=patient_id)
    return Status(204, None)
