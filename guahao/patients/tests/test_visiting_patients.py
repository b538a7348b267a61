"""Visiting patients: real-name verified every time, each account's own record (the same real person
under two accounts is two records with one id_index), at most five active per account and one 本人,
removable without losing the record that registrations point to."""

from __future__ import annotations

import pytest

from guahao import pii
from guahao.errors import Conflict, InvalidInput, NotFound, UpstreamUnavailable
from guahao.patients import selectors, services
from guahao.patients.models import Patient
from guahao.patients.realname import sandbox
from guahao.testing import (
    id_number_with_check,
    make_account,
    make_id_number,
    make_patient,
    make_phone,
)

pytestmark = pytest.mark.django_db


def _add(account, *, name="张三", id_number=None, relation="other", id_type="resident", phone=None):
    return services.add_patient(
        account=account,
        name=name,
        id_type=id_type,
        id_number=id_number or make_id_number(),
        phone=phone or make_phone(),
        relation=relation,
        client_ip="10.0.0.1",
    )


def test_adding_a_patient_stores_the_identity_encrypted_and_indexed() -> None:
    account = make_account()
    number = id_number_with_check("11010519900307123")

    patient = _add(account, name="张三丰", id_number=number, relation="self", phone="13812345678")

    assert patient.account == account
    assert patient.relation == "self"
    assert patient.name == "张三丰"
    assert patient.name_index == pii.blind_index("张三丰", purpose="name")
    assert patient.id_number == number
    assert patient.id_index == pii.blind_index(f"resident:{number}", purpose="id")
    assert patient.phone == "13812345678"
    assert patient.phone_index == pii.blind_index("13812345678", purpose="phone")
    assert patient.sex == "M"
    assert str(patient.birth_date) == "1990-03-07"
    assert patient.verified_at is not None
    assert patient.removed_at is None
    assert list(selectors.patients_of(account)) == [patient]
    assert Patient.objects.get(pk=patient.pk).birth_date == patient.birth_date


def test_each_account_keeps_its_own_record_of_the_same_person() -> None:
    number = make_id_number()
    first = _add(make_account(), name="John Smith", id_number=number, relation="parent")
    second = _add(make_account(), name="JOHN SMITH", id_number=number, relation="child")

    assert first.pk != second.pk
    assert first.id_index == second.id_index  # the same real person, for the rules that follow them
    assert (first.name, first.relation) == ("John Smith", "parent")
    assert (second.name, second.relation) == ("JOHN SMITH", "child")
    assert first.phone != second.phone
    assert Patient.objects.count() == 2


def test_a_person_on_file_elsewhere_is_still_verified() -> None:
    number = make_id_number()
    _add(make_account(), name="王芳", id_number=number)

    with sandbox.outage(), pytest.raises(UpstreamUnavailable):
        _add(make_account(), name="王芳", id_number=number)

    assert Patient.objects.count() == 1


@pytest.mark.usefixtures("roomy_add_limits")
def test_the_sixth_patient_is_refused() -> None:
    account = make_account()
    for _ in range(services.MAX_PATIENTS_PER_ACCOUNT):
        _add(account)

    with pytest.raises(Conflict) as refused:
        _add(account)

    assert refused.value.message == "每个账号最多添加5位就诊人"
    assert refused.value.status == 409
    assert selectors.patients_of(account).count() == 5


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

    patient = _add(make_account(), id_number=number, id_type="hmt_residence")
    assert patient.id_type == "hmt_residence"


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

    assert _add(make_account(), name=name, id_number=number).name == name


def test_realname_service_down_is_a_clear_503_and_stores_nothing() -> None:
    with sandbox.outage(), pytest.raises(UpstreamUnavailable) as refused:
        _add(make_account())

    assert refused.value.status == 503
    assert "实名核验服务暂时无法响应" in refused.value.message
    assert not Patient.objects.exists()


def test_invalid_input_is_refused_before_anything_is_stored() -> None:
    account = make_account()
    with pytest.raises(InvalidInput, match="手机号格式不正确"):
        _add(account, phone="123", relation="self")
    with pytest.raises(InvalidInput, match="与就诊人关系"):
        _add(account, relation="friend")
    with pytest.raises(InvalidInput, match="姓名"):
        _add(account, name="张")
    assert not Patient.objects.exists()


def test_removing_a_patient_hides_it_but_keeps_the_record() -> None:
    account = make_account()
    patient = make_patient(account)

    services.remove_patient(account=account, patient_id=patient.pk)

    assert not selectors.patients_of(account).exists()
    patient.refresh_from_db()
    assert patient.removed_at is not None
    with pytest.raises(NotFound):
        selectors.get_patient_for_account(account=account, patient_id=patient.pk)
    with pytest.raises(NotFound):  # removing twice is removing a missing one
        services.remove_patient(account=account, patient_id=patient.pk)


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
    assert theirs.value.code == missing.value.code == read.value.code == "patient_not_found"
    assert selectors.get_patient_for_account(account=owner, patient_id=patient.pk) == patient
    assert list(selectors.patients_of(owner)) == [patient]


@pytest.mark.usefixtures("roomy_add_limits")
def test_a_removed_patient_frees_a_place_and_can_be_added_again() -> None:
    account = make_account()
    number = make_id_number()
    first = _add(account, id_number=number, name="周杰", relation="self")
    others = [_add(account) for _ in range(4)]
    services.remove_patient(account=account, patient_id=first.pk)

    again = _add(account, id_number=number, name="周杰", relation="self")

    assert again.pk != first.pk  # a new record; the removed one stays for its registrations
    assert again.id_index == first.id_index
    assert list(selectors.patients_of(account)) == [*others, again]
    assert Patient.objects.filter(account=account, id_index=first.id_index).count() == 2
