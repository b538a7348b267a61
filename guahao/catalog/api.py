"""The catalog for patients: hospitals, departments, doctors (public), and the notices a patient must
confirm before booking (reading is public, confirming needs sign-in)."""

from __future__ import annotations

import datetime as dt

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from pydantic import ConfigDict

from guahao import clock
from guahao.catalog import selectors, services
from guahao.patients.auth import bearer
from guahao.payments.channels import PaymentChannel

router = Router(tags=["医院与科室"])


class PaymentChannelOut(Schema):
    code: str = Field(description="wechat / alipay / unionpay")
    label: str = Field(description="微信支付 / 支付宝 / 银行卡")


class HospitalOut(Schema):
    id: int
    code: str
    name: str
    grade: str
    address: str
    service_phone: str
    browse_level: int
    payment_channels: list[PaymentChannelOut] = Field(description="本院提供的支付方式")

    @staticmethod
    def resolve_payment_channels(obj) -> list[dict]:
        return [{"code": c, "label": PaymentChannel(c).label} for c in obj.offered_channels]


class DepartmentNodeOut(Schema):
    id: int
    name: str
    level: int
    intro: str
    location: str
    bookable: bool
    children: list[DepartmentNodeOut]


DepartmentNodeOut.model_rebuild()


class DepartmentBriefOut(Schema):
    id: int
    name: str


class DoctorOut(Schema):
    id: int
    name: str
    title: str
    title_label: str
    specialty: str
    intro: str
    department: DepartmentBriefOut

    @staticmethod
    def resolve_title_label(obj) -> str:
        return obj.get_title_display()


class SearchQuery(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    q: str = Field(
        min_length=1,
        max_length=selectors.SEARCH_MAX_LENGTH,
        description="科室或医生名称、全拼或拼音首字母（如 皮肤、pifu、pfk），1–32 个字",
    )


class SearchDepartmentOut(Schema):
    id: int
    name: str
    level: int
    parent_name: str | None = Field(description="上级科室名称（一级科室为 null）")
    location: str

    @staticmethod
    def resolve_parent_name(obj) -> str | None:
        return obj.parent.name if obj.parent_id else None


class SearchOut(Schema):
    q: str
    departments: list[SearchDepartmentOut]
    doctors: list[DoctorOut]


class NoticeOut(Schema):
    id: int
    kind: str
    kind_label: str
    title: str
    body: str
    version: int
    requires_ack: bool
    acknowledged: bool | None  # null when the request is anonymous


class NoticeAckOut(Schema):
    notice_id: int
    acked_at: dt.datetime


@router.get("/hospitals", response=list[HospitalOut])
def list_hospitals(request: HttpRequest):
    return list(selectors.active_hospitals())


@router.get("/hospitals/{hospital_id}", response=HospitalOut, summary="医院详情（含支付方式）")
def get_hospital(request: HttpRequest, hospital_id: int):
    return selectors.get_hospital(hospital_id)


@router.get(
    "/hospitals/{hospital_id}/search",
    response=SearchOut,
    summary="搜索科室和医生",
    description="按名称、全拼或拼音首字母搜索本院启用的科室和医生：科室在前，完全匹配和开头匹配排在前面，各最多 20 个。",
)
def search(request: HttpRequest, hospital_id: int, query: Query[SearchQuery]):
    found = selectors.search(selectors.get_hospital(hospital_id), query.q)
    return {"q": query.q, "departments": found.departments, "doctors": found.doctors}


@router.get("/hospitals/{hospital_id}/departments", response=list[DepartmentNodeOut])
def department_tree(request: HttpRequest, hospital_id: int):
    """The root departments, each with its children down to the hospital's browse level."""
    return selectors.department_tree(selectors.get_hospital(hospital_id))


@router.get("/hospitals/{hospital_id}/doctors", response=list[DoctorOut])
def list_doctors(request: HttpRequest, hospital_id: int, department_id: int | None = None):
    hospital = selectors.get_hospital(hospital_id)
    department = None if department_id is None else selectors.get_department(department_id, hospital=hospital)
    return list(selectors.doctors_of(hospital, department=department))


@router.get("/hospitals/{hospital_id}/notices", response=list[NoticeOut])
def list_notices(request: HttpRequest, hospital_id: int):
    hospital = selectors.get_hospital(hospital_id)
    notices = selectors.current_notices(hospital)
    # Optional sign-in: with a valid token each notice says whether this account has confirmed it.
    account = bearer(request)
    acked = selectors.acknowledged_notice_ids(account=account, notices=notices) if account else None
    return [
        {
            "id": n.id,
            "kind": n.kind,
            "kind_label": n.get_kind_display(),
            "title": n.title,
            "body": n.body,
            "version": n.version,
            "requires_ack": n.requires_ack,
            "acknowledged": (n.id in acked) if acked is not None else None,
        }
        for n in notices
    ]


@router.post("/notices/{notice_id}/ack", response=NoticeAckOut, auth=bearer)
def acknowledge_notice(request: HttpRequest, notice_id: int):
    ack = services.acknowledge_notice(account=request.auth, notice_id=notice_id)
    return {"notice_id": ack.notice_id, "acked_at": clock.local(ack.acked_at)}
