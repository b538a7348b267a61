"""ID numbers, phones and names: what a real-name identity must look like, and what the patient is
told when it does not."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.errors import InvalidInput
from guahao.patients.idcard import (
    age_on,
    check_character,
    parse_id_number,
    validate_name,
    validate_phone,
)
from guahao.patients.models import Patient
from guahao.testing import id_number_with_check

RESIDENT = Patient.IdType.RESIDENT
HMT = Patient.IdType.HMT_RESIDENCE
FOREIGNER = Patient.IdType.FOREIGNER

VALID_RESIDENT = id_number_with_check("11010519900307123")


def _with_wrong_check(number: str) -> str:
    wrong = "0" if number[-1] != "0" else "1"
    return number[:-1] + wrong


def _tomorrow() -> str:
    return (clock.today() + dt.timedelta(days=1)).strftime("%Y%m%d")


@pytest.mark.parametrize(
    ("id_type", "number", "sex", "birth"),
    [
        (RESIDENT, VALID_RESIDENT, "M", dt.date(1990, 3, 7)),
        (RESIDENT, "11010519491231002X", "F", dt.date(1949, 12, 31)),
        (RESIDENT, "11010519491231002x", "F", dt.date(1949, 12, 31)),
        (RESIDENT, id_number_with_check("65010220000229004"), "F", dt.date(2000, 2, 29)),
        (HMT, id_number_with_check("81000019900307123"), "M", dt.date(1990, 3, 7)),
        (HMT, id_number_with_check("82000019850101002"), "F", dt.date(1985, 1, 1)),
        (HMT, id_number_with_check("83000019700615005"), "M", dt.date(1970, 6, 15)),
        (FOREIGNER, id_number_with_check("93184019880808123"), "M", dt.date(1988, 8, 8)),
    ],
)
def test_valid_id_numbers_give_sex_and_birth_date(id_type, number, sex, birth) -> None:
    info = parse_id_number(number, id_type=id_type)

    assert info.number == number.upper()
    assert info.id_type == id_type
    assert info.sex == sex
    assert info.birth_date == birth


def test_x_check_character_is_computed_by_mod_11_2() -> None:
    assert check_character("11010519491231002") == "X"


def test_typed_spaces_and_full_width_digits_are_normalized() -> None:
    spaced = f"{VALID_RESIDENT[:6]} {VALID_RESIDENT[6:14]} {VALID_RESIDENT[14:]}"
    full_width = VALID_RESIDENT.translate(str.maketrans("0123456789", "０１２３４５６７８９"))

    assert parse_id_number(spaced).number == VALID_RESIDENT
    assert parse_id_number(full_width).number == VALID_RESIDENT


@pytest.mark.parametrize(
    ("id_type", "number", "message"),
    [
        (RESIDENT, _with_wrong_check(VALID_RESIDENT), "证件号码校验位不正确"),
        (RESIDENT, "110105194912310021", "证件号码校验位不正确"),
        (RESIDENT, id_number_with_check("11010519900230123"), "证件号码中的出生日期不存在"),
        (RESIDENT, id_number_with_check("11010519901301123"), "证件号码中的出生日期不存在"),
        (RESIDENT, id_number_with_check("11010518991231123"), "证件号码中的出生日期早于1900年"),
        (RESIDENT, VALID_RESIDENT[:17], "证件号码应为18位"),
        (RESIDENT, VALID_RESIDENT + "1", "证件号码应为18位"),
        (RESIDENT, "110105900307123", "证件号码应为18位"),
        (RESIDENT, "", "请填写证件号码"),
        (RESIDENT, "11010519900307A23X", "证件号码只能包含数字，最后一位可以是X"),
        (RESIDENT, "X10105199003071234", "证件号码只能包含数字，最后一位可以是X"),
        (RESIDENT, id_number_with_check("99010519900307123"), "外国人永久居留身份证"),
        (RESIDENT, id_number_with_check("81000019900307123"), "港澳台居民居住证"),
        (
            RESIDENT,
            id_number_with_check("20010519900307123"),
            "证件号码的前两位不是有效的省级地区码",
        ),
        (
            RESIDENT,
            id_number_with_check("66010519900307123"),
            "证件号码的前两位不是有效的省级地区码",
        ),
        (HMT, VALID_RESIDENT, "港澳台居民居住证号码应以81、82或83开头"),
        (HMT, id_number_with_check("84000019900307123"), "港澳台居民居住证号码应以81、82或83开头"),
        (HMT, _with_wrong_check(id_number_with_check("81000019900307123")), "证件号码校验位不正确"),
        (FOREIGNER, VALID_RESIDENT, "外国人永久居留身份证号码应以9开头"),
        (
            FOREIGNER,
            _with_wrong_check(id_number_with_check("93184019880808123")),
            "证件号码校验位不正确",
        ),
        (FOREIGNER, id_number_with_check("93184019880230123"), "证件号码中的出生日期不存在"),
        ("passport", VALID_RESIDENT, "证件类型不正确"),
    ],
)
def test_invalid_id_numbers_are_refused_with_a_message_naming_the_field(
    id_type, number, message
) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_id_number(number, id_type=id_type)

    assert message in refused.value.message
    assert refused.value.status == 400


def test_birth_date_today_is_accepted_but_tomorrow_is_not() -> None:
    today = clock.today().strftime("%Y%m%d")

    assert parse_id_number(id_number_with_check(f"110105{today}123")).birth_date == clock.today()
    # (computed when the test runs, not when it is collected: a run may cross midnight)
    with pytest.raises(InvalidInput, match="证件号码中的出生日期晚于今天"):
        parse_id_number(id_number_with_check(f"110105{_tomorrow()}123"))


@pytest.mark.parametrize(
    ("birth", "day", "age"),
    [
        (dt.date(1990, 3, 7), dt.date(2020, 3, 6), 29),
        (dt.date(1990, 3, 7), dt.date(2020, 3, 7), 30),
        (dt.date(2000, 2, 29), dt.date(2021, 2, 28), 20),
        (dt.date(2000, 2, 29), dt.date(2021, 3, 1), 21),
        (dt.date(2024, 5, 1), dt.date(2024, 5, 1), 0),
    ],
)
def test_age_counts_full_years(birth, day, age) -> None:
    assert age_on(birth, day) == age


def test_id_card_info_age_uses_the_hospital_calendar() -> None:
    info = parse_id_number(VALID_RESIDENT)

    assert info.age() == age_on(dt.date(1990, 3, 7), clock.today())


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("13800138000", "13800138000"),
        (" 138 0013 8000 ", "13800138000"),
        ("138-0013-8000", "13800138000"),
        ("+8613800138000", "13800138000"),
        ("19912345678", "19912345678"),
    ],
)
def test_mainland_mobile_numbers_are_accepted(raw: str, clean: str) -> None:
    assert validate_phone(raw) == clean


@pytest.mark.parametrize(
    "raw",
    ["12800138000", "1380013800", "138001380001", "1380013800a", "02188888888", "+85291234567"],
)
def test_other_phone_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidInput, match="^手机号格式不正确$"):
        validate_phone(raw)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("张三", "张三"),
        ("欧阳娜娜", "欧阳娜娜"),
        ("阿依古丽·买买提", "阿依古丽·买买提"),
        ("阿依古丽•买买提", "阿依古丽·买买提"),
        ("John  Smith", "John Smith"),
        ("𠮷田", "𠮷田"),
    ],
)
def test_names_as_on_the_id_document_are_accepted(raw: str, clean: str) -> None:
    assert validate_name(raw) == clean


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "请填写姓名"),
        ("  ", "请填写姓名"),
        ("张", "姓名应为2至30个字"),
        ("张" * 31, "姓名应为2至30个字"),
        ("张三1", "姓名只能包含汉字、英文字母和间隔号“·”"),
        ("张三<script>", "姓名只能包含汉字、英文字母和间隔号“·”"),
        ("·张三", "姓名中的间隔号“·”位置不正确"),
    ],
)
def test_bad_names_are_refused_naming_the_field(raw: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        validate_name(raw)

    assert refused.value.message == message
