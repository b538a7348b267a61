"""Writes for accounts and visiting patients: SMS sign-in, bearer tokens, adding and removing
patients. Each public function is one transaction (network calls to the SMS gateway and the
real-name service stay outside it, so no database lock is held while waiting on them)."""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import math
import secrets

from django.db import IntegrityError, connection, transaction
from django.db.models import F

from guahao import clock, pii
from guahao.errors import (
    Conflict,
    Forbidden,
    GuahaoError,
    InvalidInput,
    NotFound,
    RateLimited,
    UpstreamUnavailable,
)
from guahao.patients import realname, sms
from guahao.patients.idcard import identity_index, parse_id_number, validate_name, validate_phone
from guahao.patients.models import Account, AccountPatient, AuthToken, Patient, SmsCode

log = logging.getLogger("guahao.patients")

SMS_CODE_TTL = dt.timedelta(minutes=5)
SMS_RESEND_INTERVAL = dt.timedelta(seconds=60)
SMS_DAILY_LIMIT = 10
SMS_MAX_WRONG_TRIES = 5
TOKEN_TTL = dt.timedelta(days=30)
MAX_PATIENTS_PER_ACCOUNT = 5


# --- sign-in ----------------------------------------------------------------------------------


def send_sms_code(*, phone: str) -> None:
    """Send a fresh 6-digit sign-in code; it replaces any earlier one and lives 5 minutes.

    At most one code per phone every 60 seconds and SMS_DAILY_LIMIT per calendar day
    (RateLimited, with `retry_after` seconds). Only a keyed hash of the code is stored.
    """
    phone = validate_phone(phone)
    phone_index = _phone_index(phone)
    code = f"{secrets.randbelow(1_000_000):06d}"
    now = clock.now()
    with transaction.atomic():
        _serialize_per_phone(phone_index)
        last = (
            SmsCode.objects.filter(phone_index=phone_index).order_by("-created_at", "-id").first()
        )
        if last is not None and now - last.created_at < SMS_RESEND_INTERVAL:
            wait = math.ceil((SMS_RESEND_INTERVAL - (now - last.created_at)).total_seconds())
            raise RateLimited(
                f"获取验证码过于频繁，请{wait}秒后再试", code="sms_too_soon", retry_after=wait
            )
        day_start = clock.at_local(clock.today(), dt.time.min)
        if (
            SmsCode.objects.filter(phone_index=phone_index, created_at__gte=day_start).count()
            >= SMS_DAILY_LIMIT
        ):
            raise RateLimited(
                f"该手机号今日获取验证码已达{SMS_DAILY_LIMIT}次，请明天再试", code="sms_daily_limit"
            )
        sms_code = SmsCode.objects.create(
            phone_index=phone_index,
            code_hash=_code_hash(phone_index, code),
            created_at=now,
            expires_at=now + SMS_CODE_TTL,
        )
    try:
        sms.sender().send_code(phone, code)
    except sms.SmsNotSent as exc:
        # Not sent: forget the code so the patient may ask again at once instead of in 60 s.
        SmsCode.objects.filter(pk=sms_code.pk).delete()
        log.warning("sms code not sent to %s: %s", pii.mask_phone(phone), exc)
        raise UpstreamUnavailable(
            "短信发送失败，请稍后重新获取验证码", code="sms_not_sent"
        ) from exc
    log.info("sms code issued", extra={"phone": pii.mask_phone(phone)})


def login(*, phone: str, code: str) -> str:
    """Exchange the latest SMS code for a bearer token, creating the account on first sign-in.

    A code works once (a conditional UPDATE claims it, so two simultaneous logins get one token),
    for 5 minutes, and dies after SMS_MAX_WRONG_TRIES wrong tries.
    """
    phone = validate_phone(phone)
    code = (code or "").strip()
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        raise InvalidInput("验证码应为6位数字", code="invalid_sms_code")
    phone_index = _phone_index(phone)
    now = clock.now()
    with transaction.atomic():
        latest = (
            SmsCode.objects.filter(phone_index=phone_index).order_by("-created_at", "-id").first()
        )
        refusal = _refuse_code(latest, code, now)
        if refusal is None and latest is not None:
            claimed = SmsCode.objects.filter(
                pk=latest.pk,
                used_at__isnull=True,
                failed_attempts__lt=SMS_MAX_WRONG_TRIES,
                expires_at__gt=now,
            ).update(used_at=now)
            if claimed:
                account = _account_for_phone(phone, phone_index)
                return issue_token(account=account)
            refusal = InvalidInput("验证码已使用，请重新获取", code="sms_code_used")
    # Raised outside the transaction: a wrong try must stay counted.
    raise refusal or InvalidInput("请先获取验证码", code="sms_code_missing")


def _refuse_code(latest: SmsCode | None, code: str, now: dt.datetime) -> GuahaoError | None:
    """Why `code` does not sign in (counting a wrong try), or None if it may be claimed."""
    if latest is None:
        return InvalidInput("请先获取验证码", code="sms_code_missing")
    if latest.used_at is not None:
        return InvalidInput("验证码已使用，请重新获取", code="sms_code_used")
    if latest.failed_attempts >= SMS_MAX_WRONG_TRIES:
        return RateLimited("验证码错误次数过多，请重新获取", code="sms_code_locked")
    if latest.expires_at <= now:
        return InvalidInput("验证码已过期，请重新获取", code="sms_code_expired")
    if hmac.compare_digest(latest.code_hash, _code_hash(latest.phone_index, code)):
        return None
    counted = SmsCode.objects.filter(
        pk=latest.pk, used_at__isnull=True, failed_attempts__lt=SMS_MAX_WRONG_TRIES
    ).update(failed_attempts=F("failed_attempts") + 1)
    left = SMS_MAX_WRONG_TRIES - latest.failed_attempts - 1
    if not counted or left <= 0:
        return RateLimited("验证码错误次数过多，请重新获取", code="sms_code_locked")
    return InvalidInput(f"验证码不正确，还可以再试{left}次", code="sms_code_wrong")


def issue_token(*, account: Account) -> str:
    """A new bearer token for `account`, valid 30 days; only its SHA-256 is stored."""
    if not account.is_active:
        raise Forbidden("该账号已停用，请联系医院客服", code="account_disabled")
    key = secrets.token_urlsafe(32)
    now = clock.now()
    with transaction.atomic():
        AuthToken.objects.create(
            account=account,
            key_hash=pii.token_hash(key),
            created_at=now,
            expires_at=now + TOKEN_TTL,
        )
    return key


def purge_expired_credentials(*, now: dt.datetime) -> int:
    """Delete what no longer signs anyone in: SMS codes a day past their expiry (the rate limits
    look back one day at most) and expired bearer tokens. Keeps personal data to what is needed."""
    with transaction.atomic():
        codes, _ = SmsCode.objects.filter(expires_at__lt=now - dt.timedelta(days=1)).delete()
        tokens, _ = AuthToken.objects.filter(expires_at__lt=now).delete()
    return codes + tokens


def issue_token_for_phone(*, phone: str) -> str:
    """Sign in without an SMS code (operator and developer tool: `guahao token --phone`)."""
    phone = validate_phone(phone)
    with transaction.atomic():
        account = _account_for_phone(phone, _phone_index(phone))
        key = issue_token(account=account)
    log.info("token issued without sms code", extra={"account_id": account.pk})
    return key


def _account_for_phone(phone: str, phone_index: str) -> Account:
    account, created = Account.objects.get_or_create(
        phone_index=phone_index, defaults={"phone": phone}
    )
    if created:
        log.info(
            "account created", extra={"account_id": account.pk, "phone": pii.mask_phone(phone)}
        )
    return account


def _phone_index(phone: str) -> str:
    return pii.blind_index(phone, purpose="phone")


def _code_hash(phone_index: str, code: str) -> str:
    # Keyed: without the index key, a leaked table does not give the 10^6 codes away.
    return pii.blind_index(f"{phone_index}:{code}", purpose="sms-code")


def _serialize_per_phone(phone_index: str) -> None:
    """Queue concurrent code requests for one phone, so the 60 s rule cannot be raced.

    SQLite already runs one write transaction at a time (IMMEDIATE); PostgreSQL takes a
    transaction-scoped advisory lock keyed by the phone's index.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int(phone_index[:15], 16)])


# --- visiting patients ------------------------------------------------------------------------


def add_patient(
    *, account: Account, name: str, id_type: str, id_number: str, phone: str, relation: str
) -> AccountPatient:
    """Link a real-name visiting patient to `account`.

    The identity is checked (ID number, name, phone) and verified with the real-name service
    unless the same person is already on file under the same name. One Patient row per real
    person, shared by accounts; at most MAX_PATIENTS_PER_ACCOUNT per account, one 本人.
    """
    name = validate_name(name)
    identity = parse_id_number(id_number, id_type=id_type)
    phone = validate_phone(phone)
    if relation not in AccountPatient.Relation.values:
        raise InvalidInput("与就诊人关系应为本人、配偶、子女、父母或其他", code="invalid_relation")
    id_index = identity_index(identity)

    # Cheap refusals first, so a refused add costs no call to the real-name service.
    existing = Patient.objects.filter(id_index=id_index).first()
    _check_can_link(account=account, patient=existing, relation=relation)
    if existing is not None and not _same_name(existing.name, name):
        raise InvalidInput("姓名与证件号码不一致，请核对后重试", code="realname_rejected")
    if existing is None or existing.verified_at is None:
        _verify_realname(name=name, id_type=identity.id_type, id_number=identity.number)

    with transaction.atomic():
        # Lock the account row: concurrent adds for one account queue here (count and 本人 rules).
        list(Account.objects.select_for_update().filter(pk=account.pk).values_list("pk", flat=True))
        patient, created = Patient.objects.get_or_create(
            id_index=id_index,
            defaults={
                "name": name,
                "id_type": identity.id_type,
                "id_number": identity.number,
                "sex": identity.sex,
                "birth_date": identity.birth_date,
                "phone": phone,
                "verified_at": clock.now(),
            },
        )
        if not created:
            if not _same_name(patient.name, name):
                raise InvalidInput("姓名与证件号码不一致，请核对后重试", code="realname_rejected")
            if patient.verified_at is None:
                patient.verified_at = clock.now()
                patient.save(update_fields=["verified_at"])
        _check_can_link(account=account, patient=patient, relation=relation)
        try:
            with transaction.atomic():
                link = AccountPatient.objects.create(
                    account=account, patient=patient, relation=relation
                )
        except IntegrityError as exc:
            raise Conflict("该就诊人已在您的就诊人列表中", code="patient_exists") from exc
    log.info(
        "patient linked",
        extra={
            "account_id": account.pk,
            "patient_id": patient.pk,
            "relation": relation,
            "new_patient": created,
        },
    )
    return link


def remove_patient(*, account: Account, patient_id: int) -> None:
    """Unlink a patient from `account`. The Patient row stays: registrations refer to it.
    Another account's patient is answered exactly like a missing one (NotFound)."""
    with transaction.atomic():
        deleted, _ = AccountPatient.objects.filter(account=account, patient_id=patient_id).delete()
    if not deleted:
        raise NotFound("就诊人不存在", code="patient_not_found")
    log.info("patient unlinked", extra={"account_id": account.pk, "patient_id": patient_id})


def _check_can_link(*, account: Account, patient: Patient | None, relation: str) -> None:
    links = AccountPatient.objects.filter(account=account)
    if patient is not None and patient.pk and links.filter(patient=patient).exists():
        raise Conflict("该就诊人已在您的就诊人列表中", code="patient_exists")
    if (
        relation == AccountPatient.Relation.SELF
        and links.filter(relation=AccountPatient.Relation.SELF).exists()
    ):
        raise Conflict("每个账号只能添加一位“本人”", code="self_exists")
    if links.count() >= MAX_PATIENTS_PER_ACCOUNT:
        raise Conflict(f"每个账号最多添加{MAX_PATIENTS_PER_ACCOUNT}位就诊人", code="patient_limit")


def _same_name(on_file: str, given: str) -> bool:
    # Latin names compare without case (JOHN SMITH is John Smith); Chinese names exactly.
    return on_file.casefold() == given.casefold()


def _verify_realname(*, name: str, id_type: str, id_number: str) -> None:
    try:
        realname.verifier().verify(name=name, id_type=id_type, id_number=id_number)
    except realname.RealnameRejected as exc:
        raise InvalidInput(f"实名核验未通过：{exc.reason}", code="realname_rejected") from exc
    except realname.RealnameUnavailable as exc:
        log.warning("realname service unavailable: %s", exc)
        raise UpstreamUnavailable(
            "实名核验服务暂时无法响应，请稍后重试；如仍有问题请联系医院客服",
            code="realname_unavailable",
        ) from exc
