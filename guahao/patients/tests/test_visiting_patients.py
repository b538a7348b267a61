"""Visiting patients: real-name verified, one row per real person shared by accounts, at most five
per account and one 本人, removable without losing the person's record."""

from __future__ import annotations

import pytest

from guahao import pii
from guahao.errors import Conflict, InvalidInput, NotFound, UpstreamUnavailable
from guahao.patients import selectors, services
from guahao.patients.models import AccountPatient, Patient
from guahao.patients.realname import sandbox
from guahao.testing import (
    id_number_with_check,
    make_account,
    make_id_number,
    make_patient,
    make_phone,
)

pytestmark = pytest.mark.django_db


def _add(account, *, name="张三", id_number=None, relation="other", id_type="resident"):
    return services.add_patient(
        account=account,
        name=name,
        id_type=id_type,
        id_number=id_number or make_id_number(),
        phone=make_phone(),
        relation=relation,
    )


def test_adding_a_patient_stores_the_identity_encrypted_and_indexed() -> None:
    account = make_account()
    number = id_number_with_check("11010519900307123")

    link = _add(account, name="张三丰", id_number=number, relation="self")

    patient = link.patient
    assert link.relation == "self"
    assert patient.name == "张三丰"
    assert patient.id_number == number
    assert patient.id_index == pii.blind_index(f"resident:{number}", purpose="id")
    assert patient.sex == "M"
    assert str(patient.birth_date) == "1990-03-07"
    assert patient.verified_at is not None
    assert list(selectors.patients_of(account)) == [link]


def test_one_real_person_is_one_patient_row_shared_by_accounts() -> None:
    number = make_id_number()
    first = _add(make_account(), name="李娜", id_number=number, relation="parent")
    second = _add(make_account(), name="李娜", id_number=number, relation="child")

    assert first.patient == second.patient
    assert Patient.objects.count() == 1


def test_a_known_id_number_under_another_name_is_refused() -> None:
    number = make_id_number()
    _add(make_account(), name="李娜", id_number=number)

    with pytest.raises(InvalidInput, match="姓名与证件号码不一致"):
        _add(make_account(), name="李雷", id_number=number)


def test_the_sixth_patient_is_refused() -> None:
    account = make_account()
    for _ in range(services.MAX_PATIENTS_PER_ACCOUNT):
        _add(account)

    with pytest.raises(Conflict) as refused:
        _add(account)

    assert refused.value.message == "每个账号最多添加5位就诊人"
    assert refused.value.status == 409
    assert AccountPatient.objects.filter(account=account).count() == 5


def test_only_one_self_per_account() -> None:
    account = make_account()
    _add(account, relation="self")

    with pytest.raises(Conflict, match="只能添加一位“本人”"):
        _add(account, relation="self")


def test_the_same_person_twice_on_one_account_is_refused() -> None:
    account = make_account()
    number = make_id_number()
    _add(account, id_number=number, relation="spouse")

    with pytest.raises(Conflict, match="该就诊人已在您的就诊人列表中"):
        _add(account, id_number=number, relation="other")


def test_the_same_number_as_another_document_type_is_another_person() -> None:
    number = id_number_with_check("81000019900307123")
    with pytest.raises(InvalidInput, match="港澳台居民居住证"):
        _add(make_account(), id_number=number, id_type="resident")

    link = _add(make_account(), id_number=number, id_type="hmt_residence")
    assert link.patient.id_type == "hmt_residence"


def test_realname_rejection_is_told_to_the_patient_and_nothing_is_stored() -> None:
    account = make_account()

    with pytest.raises(InvalidInput) as refused:
        _add(account, name="张测试不符")

    assert refused.value.message == "实名核验未通过：姓名与证件号码不一致"
    assert not Patient.objects.exists()


def test_sandbox_identities_on_file_pass_only_under_their_name() -> None:
    number, name = next(iter(sandbox.ON_FILE.items()))
    with pytest.raises(InvalidInput, match="实名核验未通过"):
        _add(make_account(), name="赵六", id_number=number)

    assert _add(make_account(), name=name, id_number=number).patient.name == name


def test_realname_service_down_is_a_clear_503_and_stores_nothing() -> None:
    with sandbox.outage(), pytest.raises(UpstreamUnavailable) as refused:
        _add(make_account())

    assert refused.value.status == 503
    assert "实名核验服务暂时无法响应" in refused.value.message
    assert not Patient.objects.exists()


def test_an_already_verified_person_needs_no_new_verification() -> None:
    number = make_id_number()
    _add(make_account(), name="王芳", id_number=number)

    with sandbox.outage():
        link = _add(make_account(), name="王芳", id_number=number)

    assert link.patient.name == "王芳"


def test_invalid_input_is_refused_before_anything_is_stored() -> None:
    account = make_account()
    with pytest.raises(InvalidInput, match="手机号格式不正确"):
        services.add_patient(
            account=account, name="张三", id_type="resident", id_number=make_id_number(),
            phone="123", relation="self",
        )  # fmt: skip
    with pytest.raises(InvalidInput, match="与就诊人关系"):
        _add(account, relation="friend")
    with pytest.raises(InvalidInput, match="姓名"):
        _add(account, name="张")
    assert not Patient.objects.exists()


def test_removing_a_patient_unlinks_but_keeps_the_person() -> None:
    account = make_account()
    patient = make_patient(account)

    services.remove_patient(account=account, patient_id=patient.pk)

    assert not selectors.patients_of(account).exists()
    assert Patient.objects.filter(pk=patient.pk).exists()


def test_another_accounts_patient_is_not_found_like_a_missing_one() -> None:
    owner, stranger = make_account(), make_account()
    patient = make_patient(owner)

    with pytest.raises(NotFound) as theirs:
        services.remove_patient(account=stranger, patient_id=patient.pk)
    with pytest.raises(NotFound) as missing:
        services.remove_patient(account=stranger, patient_id=patient.pk + 1000)
    with pytest.raises(NotFound) as read:
        selectors.get_patient_for_account(account=stranger, patient_id=patient.pk)

    assert theirs.value.message == missing.value.message == read.value.message == "就诊人不存在"
    assert selectors.get_patient_for_account(account=owner, patient_id=patient.pk) == patient
    assert AccountPatient.objects.filter(account=owner).count() == 1


def test_a_removed_patient_frees_a_place_and_can_be_added_again() -> None:
    account = make_account()
    number = make_id_number()
    links = [_add(account, id_number=number, name="周杰")] + [_add(account) for _ in range(4)]
    services.remove_patient(account=account, patient_id=links[0].patient_id)

    again = _add(account, id_number=number, name="周杰")

    assert again.patient_id == links[0].patient_id
