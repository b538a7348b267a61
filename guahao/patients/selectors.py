"""Reads for accounts and visiting patients. An account sees only its own patients."""

from __future__ import annotations

from django.db.models import QuerySet

from guahao import clock, pii
from guahao.errors import NotFound
from guahao.patients.models import Account, AuthToken, Patient


def token_for_key(key: str) -> AuthToken | None:
    """The live bearer token of an active account, or None (unknown, ended, expired, disabled)."""
    if not key:
        return None
    return (
        AuthToken.objects.select_related("account")
        .filter(key_hash=pii.token_hash(key), expires_at__gt=clock.now(), account__is_active=True)
        .first()
    )


def account_for_token(key: str) -> Account | None:
    token = token_for_key(key)
    return token.account if token else None


def tokens_of(account: Account) -> QuerySet[AuthToken]:
    """The account's signed-in devices, most recently used first."""
    return AuthToken.objects.filter(account=account, expires_at__gt=clock.now()).order_by(
        "-last_used_at", "-id"
    )


def account_for_phone(phone: str) -> Account | None:
    # Every index key: while keys rotate the account may still carry a retired key's digest.
    return Account.objects.filter(phone_index__in=pii.blind_indexes(phone, purpose="phone")).first()


def person_indexes(patient: Patient) -> list[str]:
    """The blind index of the patient's real person (document type + number) under every index
    key, current first: the records of one person may carry different keys' digests while keys
    rotate, and the rules that follow the person must see all of them."""
    return pii.blind_indexes(f"{patient.id_type}:{patient.id_number}", purpose="id")


def patients_of(account: Account) -> QuerySet[Patient]:
    """The account's own visiting patients (removed ones hidden), oldest first."""
    return Patient.objects.filter(account=account, removed_at__isnull=True).order_by(
        "created_at", "id"
    )


def default_patient(account: Account) -> Patient | None:
    """The account's default visiting patient (默认就诊人), or None."""
    return patients_of(account).filter(is_default=True).first()


def get_patient_for_account(*, account: Account, patient_id: int) -> Patient:
    """One of the account's own active visiting patients. Another account's patient, or a removed
    one, is answered exactly like a missing one."""
    patient = patients_of(account).filter(id=patient_id).first()
    if patient is None:
        raise NotFound("就诊人不存在", code="patient_not_found")
    return patient
