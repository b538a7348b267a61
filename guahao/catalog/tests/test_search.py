"""Search for departments and doctors by Chinese name, full pinyin and pinyin initials, on pinyin
stored with each row (heteronyms read as a hospital's patients say them)."""

from __future__ import annotations

import itertools

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext

from guahao.catalog import selectors
from guahao.catalog.models import Department, Doctor
from guahao.catalog.pinyin import romanize, romanize_person, search_key
from guahao.testing import api_client, make_department, make_doctor, make_hospital


@pytest.fixture
def hospital(db):
    hospital = make_hospital(name="示范医院")
    internal = make_department(hospital, name="内科")
    cardiology = make_department(hospital, name="心血管内科", parent=internal)
    make_department(hospital, name="皮肤科")
    make_department(hospital, name="重症医学科")
    make_department(hospital, name="儿童行为医学科")
    make_department(hospital, name="长春路院区门诊")
    make_department(hospital, name="CT室")
    make_doctor(cardiology, name="李建国")
    make_doctor(cardiology, name="李建华")
    make_doctor(cardiology, name="曾志华")
    return hospital


def _search(hospital, q: str) -> tuple[list[str], list[str]]:
    found = selectors.search(hospital, q)
    return [d.name for d in found.departments], [d.name for d in found.doctors]


@pytest.mark.parametrize(
    "q,department",
    [
        ("pfk", "皮肤科"),
        ("PFK", "皮肤科"),
        ("pifu", "皮肤科"),
        ("pifuke", "皮肤科"),
        ("皮肤", "皮肤科"),
        ("xxg", "心血管内科"),
        ("xinxueguan", "心血管内科"),
        ("Xin Xue'guan", "心血管内科"),
        ("xueguan", "心血管内科"),  # inside the full pinyin, from three letters on
        ("zhongzheng", "重症医学科"),  # 重 read zhong, 症 zheng
        ("zzyxk", "重症医学科"),
        ("xingwei", "儿童行为医学科"),  # 行 read xing, not hang
        ("changchun", "长春路院区门诊"),  # 长 read chang, not zhang
        ("ct", "CT室"),
        ("ｃｔ室", "CT室"),  # full-width letters as a phone keyboard may send them
    ],
)
def test_a_department_is_found_by_name_full_pinyin_and_initials(hospital, q, department):
    departments, _ = _search(hospital, q)
    assert departments[:1] == [department]


@pytest.mark.parametrize("q", ["lijianguo", "ljg", "LJG", "李建国", "li jian guo"])
def test_a_doctor_is_found_by_name_full_pinyin_and_initials(hospital, q):
    _, doctors = _search(hospital, q)
    assert doctors[:1] == ["李建国"]


def test_a_doctor_surname_is_read_as_a_surname(hospital):
    assert romanize_person("曾志华") == ("zengzhihua", "zzh")
    assert romanize("曾经") == ("cengjing", "cj")
    assert _search(hospital, "zengzhi")[1] == ["曾志华"]
    assert _search(hospital, "zzh")[1] == ["曾志华"]


def test_heteronyms_of_department_names_use_the_phrase_dictionary():
    assert romanize("重症医学科") == ("zhongzhengyixueke", "zzyxk")
    assert romanize("行为医学科") == ("xingweiyixueke", "xwyxk")
    assert romanize("呼吸与危重症医学科")[0] == "huxiyuweizhongzhengyixueke"
    assert romanize("儿童生长发育科") == ("ertongshengzhangfayuke", "etszfyk")
    assert romanize("长春路门诊")[1] == "cclmz"
    assert romanize("口腔颌面外科")[0] == "kouqianghemianwaike"
    assert search_key("Lü ") == "lv"


def test_departments_come_first_and_exact_and_prefix_matches_rank_first(hospital):
    found = selectors.search(hospital, "内科")
    # 内科 itself (exact) before 心血管内科 (contains).
    assert [d.name for d in found.departments] == ["内科", "心血管内科"]
    departments, doctors = _search(hospital, "lijian")
    assert departments == []
    assert doctors == ["李建国", "李建华"]  # both prefix matches, in the hospital's order
    # "ljgh" matches nothing; "ljh" the initials of 李建华 exactly.
    assert _search(hospital, "ljh")[1] == ["李建华"]


def test_only_active_departments_and_doctors_of_this_hospital(hospital):
    Department.objects.filter(hospital=hospital, name="皮肤科").update(is_active=False)
    Doctor.objects.filter(name="李建华").update(is_active=False)
    other = make_hospital(name="别的医院")
    make_doctor(make_department(other, name="皮肤科"), name="李建国")
    assert _search(hospital, "pfk") == ([], [])
    assert _search(hospital, "lijian") == ([], ["李建国"])
    # A doctor of a switched-off department cannot be booked, so is not found either.
    Department.objects.filter(hospital=hospital, name="心血管内科").update(is_active=False)
    assert _search(hospital, "ljg") == ([], [])


def test_pinyin_follows_a_renamed_department(hospital):
    department = Department.objects.get(hospital=hospital, name="皮肤科")
    department.name = "皮肤性病科"
    department.save(update_fields=["name"])
    department.refresh_from_db()
    assert (department.name_pinyin, department.name_initials) == ("pifuxingbingke", "pfxbk")
    assert _search(hospital, "pfxb")[0] == ["皮肤性病科"]


def test_a_query_without_letters_digits_or_chinese_finds_nothing(hospital):
    assert _search(hospital, "''' ") == ([], [])
    assert _search(hospital, "") == ([], [])


# --- the API ------------------------------------------------------------------------------------


def test_search_over_http(hospital):
    body = api_client().get(f"/api/v1/hospitals/{hospital.id}/search", q="  xxg ").json()
    assert body["q"] == "xxg"
    assert [(d["name"], d["parent_name"]) for d in body["departments"]] == [("心血管内科", "内科")]
    assert body["doctors"] == []
    body = api_client().get(f"/api/v1/hospitals/{hospital.id}/search", q="ljg").json()
    [doctor] = body["doctors"]
    assert (doctor["name"], doctor["title_label"], doctor["department"]["name"]) == ("李建国", "主任医师", "心血管内科")


@pytest.mark.parametrize(
    "params,message",
    [
        ({}, "请求参数有误（q：必填）"),
        ({"q": ""}, "请求参数有误（q：不能为空）"),
        ({"q": "   "}, "请求参数有误（q：不能为空）"),
        ({"q": "皮" * 33}, "请求参数有误（q：最多 32 个字）"),
    ],
)
def test_a_missing_blank_or_long_query_is_a_422_naming_q(hospital, params, message):
    response = api_client().get(f"/api/v1/hospitals/{hospital.id}/search", **params)
    assert response.status_code == 422
    assert response.json()["message"] == message
    assert "q" in response.json()["fields"]


def test_search_in_an_unknown_hospital_is_a_404(db):
    response = api_client().get("/api/v1/hospitals/999999/search", q="pfk")
    assert response.status_code == 404
    assert response.json()["message"] == "医院不存在或已停用"


# --- stays fast with thousands of doctors --------------------------------------------------------

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国志红"


def _many_doctors(department: Department, count: int) -> None:
    names = ("".join(p) for p in itertools.product(_SURNAMES, _GIVEN, _GIVEN))
    doctors = []
    for i, name in zip(range(count), names, strict=False):
        doctor = Doctor(
            hospital=department.hospital, department=department, code=f"BULK{i}", name=name, title=Doctor.Title.ATTENDING
        )
        doctor.fill_pinyin()
        doctors.append(doctor)
    Doctor.objects.bulk_create(doctors, batch_size=500)


def _queries(callable_) -> int:
    with CaptureQueriesContext(connection) as captured:
        callable_()
    return len(captured)


def test_the_query_count_does_not_grow_with_the_number_of_doctors(hospital):
    department = Department.objects.get(hospital=hospital, name="心血管内科")
    client = api_client()
    url = f"/api/v1/hospitals/{hospital.id}/search"

    small = [_queries(lambda q=q: selectors.search(hospital, q)) for q in ("ljg", "lijianguo", "李", "xxg")]
    small_http = _queries(lambda: client.get(url, q="wang"))
    _many_doctors(department, 3000)
    assert Doctor.objects.filter(hospital=hospital).count() > 3000
    large = [_queries(lambda q=q: selectors.search(hospital, q)) for q in ("ljg", "lijianguo", "李", "xxg")]
    assert small == large == [2, 2, 2, 2]  # departments, doctors
    assert _queries(lambda: client.get(url, q="wang")) == small_http

    assert selectors.search(hospital, "wangweiwei").doctors[0].name == "王伟伟"
    assert len(selectors.search(hospital, "w").doctors) == 20  # capped at the limit
    assert selectors.search(hospital, "ljg").doctors[0].name == "李建国"  # exact first, not lost among many


# --- the migration fills existing rows ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_existing_rows_their_pinyin():
    executor = MigrationExecutor(connection)
    executor.migrate([("catalog", "0002_initial")])
    old = MigrationExecutor(connection).loader.project_state([("catalog", "0002_initial")]).apps
    try:
        Hospital = old.get_model("catalog", "Hospital")
        OldDepartment, OldDoctor = old.get_model("catalog", "Department"), old.get_model("catalog", "Doctor")
        hospital = Hospital.objects.create(code="OLD", name="旧医院")
        department = OldDepartment.objects.create(hospital=hospital, code="PFK", name="皮肤科", level=1)
        OldDoctor.objects.create(hospital=hospital, department=department, code="D1", name="曾志华", title="chief")
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert Department.objects.values_list("name_pinyin", "name_initials").get(code="PFK") == ("pifuke", "pfk")
    assert Doctor.objects.values_list("name_pinyin", "name_initials").get(code="D1") == ("zengzhihua", "zzh")
    assert Department.objects.get(code="PFK").hospital.payment_channels == ["wechat", "alipay"]
