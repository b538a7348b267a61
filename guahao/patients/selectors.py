"""Reads for accounts and visiting patients. An account sees only the patients linked to it."""

from __future__ import annotations

from django.db.models import QuerySet

from guahao import clock, pii
from guahao.errors import NotFound
from guahao.patients.models import Account, AccountPatient, AuthToken, Patient


def account_for_token(key: str) -> Account | None:
    """The active account a live bearer token belongs to, or None (unknown, expired, disabled)."""
    if not key:
        return None
    token = (
        AuthToken.objects.select_related("account")
        .filter(key_hash=pii.token_hash(key), expires_at__gt=clock.now(), account__is_active=True)
        .first()
    )
    return token.account if token else None


def account_for_phone(phone: str) -> Account | None:
    return Account.objects.filter(phone_index=pii.blind_index(phone, purpose="phone")).first()


def patients_of(account: Account) -> QuerySet[AccountPatient]:
    """The account's visiting patients as links (the link carries the relation), oldest first."""
    return (
        AccountPatient.objects.select_related("patient")
        .filter(account=account)
        .order_by("created_at", "id")
    )


def get_patient_for_account(*, account: Account, patient_id: int) -> Patient:
    """Another account's patient is answered exactly like a missing one."""
    patient = Patient.objects.filter(id=patient_id, account_links__account=account).first()
    if patient is None:
        raise NotFound("就诊人不存在", code="patient_not_found")
    return patient
