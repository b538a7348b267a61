"""Writes for accounts and visiting patients: SMS sign-in, bearer tokens, adding and removing
patients. Each public function is one transaction (network calls to the SMS gateway and the
real-name service stay outside it, so no database lock is held while waiting on them)."""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import math
import secrets

from django.conf import settings
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
from guahao.limits import services as limits
from guahao.limits.clientip import network_of
from guahao.patients import captcha, realname, sms
from guahao.patients.idcard import (
    identity_index,
    identity_indexes,
    parse_id_number,
    validate_name,
    validate_phone,
)
from guahao.patients.models import (
    Account,
    AuthToken,
    Patient,
    PatientAddAttempt,
    SmsCode,
    TokenRevocation,
)
from guahao.patients.tokens import known_tokens

log = logging.getLogger("guahao.patients")

SMS_CODE_TTL = dt.timedelta(minutes=5)
# Per phone, read once at start (GUAHAO_SMS_*): one code a minute, ten a day, five wrong tries.
SMS_RESEND_INTERVAL = dt.timedelta(seconds=settings.SMS_RESEND_SECONDS)
SMS_DAILY_LIMIT = settings.SMS_DAILY_LIMIT
SMS_MAX_WRONG_TRIES = settings.SMS_MAX_WRONG_TRIES
# A token dies after 30 days unused and 90 days after sign-in, whichever comes first; its last
# use is written at most every TOKEN_TOUCH_EVERY, so reading pages costs no write per request.
TOKEN_IDLE = dt.timedelta(days=30)
TOKEN_MAX_AGE = dt.timedelta(days=90)
TOKEN_TOUCH_EVERY = dt.timedelta(minutes=5)
# Security records are kept at least six months (等保三级 audit retention), then dropped.
ADD_ATTEMPT_RETENTION = dt.timedelta(days=183)
MAX_PATIENTS_PER_ACCOUNT = 5


# --- sign-in ----------------------------------------------------------------------------------


def send_sms_code(
    *, phone: str, client_ip: str, captcha_key: str = "", captcha_answer: str = ""
) -> None:
    """Send a fresh 6-digit sign-in code; it replaces any earlier one and lives 5 minutes.

    Limits, each answered with RateLimited and `retry_after`: per address and per /24 or /64
    (shared by all processes, see guahao.limits), one code per phone every 60 seconds and
    SMS_DAILY_LIMIT per calendar day. Past `captcha_ip` an address must first solve the image
    captcha when the hospital has switched it on. Only a keyed hash of the code is stored.
    """
    phone = validate_phone(phone)
    captcha.check(client_ip=client_ip, key=captcha_key, answer=captcha_answer)
    limits.hit("sms_code_ip", client_ip, ("sms_code_net", network_of(client_ip)))
    limits.record("captcha_ip", client_ip)
    phone_index = _phone_index(phone)
    code = f"{secrets.randbelow(1_000_000):06d}"
    now = clock.now()
    with transaction.atomic():
        _serialize_per_phone(phone_index)
        last = (
            SmsCode.objects.filter(phone_index__in=_phone_indexes(phone))
            .order_by("-created_at", "-id")
            .first()
        )
        if last is not None and now - last.created_at < SMS_RESEND_INTERVAL:
            wait = _seconds_until(last.created_at + SMS_RESEND_INTERVAL, now)
            raise RateLimited(
                f"获取验证码过于频繁，请{wait}秒后再试", code="sms_too_soon", retry_after=wait
            )
        day_start = clock.at_local(clock.today(), dt.time.min)
        if (
            SmsCode.objects.filter(
                phone_index__in=_phone_indexes(phone), created_at__gte=day_start
            ).count()
            >= SMS_DAILY_LIMIT
        ):
            raise RateLimited(
                f"该手机号今日获取验证码已达{SMS_DAILY_LIMIT}次，请明天再试",
                code="sms_daily_limit",
                retry_after=_seconds_until(day_start + dt.timedelta(days=1), now),
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
    log.info("sms code issued", extra={"phone": pii.mask_phone(phone), "client_ip": client_ip})


def login(*, phone: str, code: str, client_ip: str, user_agent: str = "") -> str:
    """Exchange the latest SMS code for a bearer token, creating the account on first sign-in.

    A code works once (a conditional UPDATE claims it, so two simultaneous logins get one token),
    for 5 minutes, and dies after SMS_MAX_WRONG_TRIES wrong tries. Every attempt counts against
    the requester's address (`login_ip`); wrong tries count against the code, not the account, so
    a stranger's guesses cost the owner one code, never the sign-in: the owner's fresh code works.
    """
    phone = validate_phone(phone)
    code = (code or "").strip()
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        raise InvalidInput("验证码应为6位数字", code="invalid_sms_code")
    limits.hit("login_ip", client_ip)
    phone_index = _phone_index(phone)
    now = clock.now()
    with transaction.atomic():
        latest = (
            SmsCode.objects.filter(phone_index__in=_phone_indexes(phone))
            .order_by("-created_at", "-id")
            .first()
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
                return issue_token(account=account, user_agent=user_agent, client_ip=client_ip)
            refusal = InvalidInput("验证码已使用，请重新获取", code="sms_code_used")
    if refusal is not None and refusal.code in {"sms_code_wrong", "sms_code_locked"}:
        log.info("wrong sign-in code", extra={"phone": pii.mask_phone(phone), "client_ip": client_ip})
    # Raised outside the transaction: a wrong try must stay counted.
    raise refusal or InvalidInput("请先获取验证码", code="sms_code_missing")


def _seconds_until(moment: dt.datetime, now: dt.datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


def _refuse_code(latest: SmsCode | None, code: str, now: dt.datetime) -> GuahaoError | None:
    """Why `code` does not sign in (counting a wrong try), or None if it may be claimed."""
    if latest is None:
        return InvalidInput("请先获取验证码", code="sms_code_missing")
    if latest.used_at is not None:
        return InvalidInput("验证码已使用，请重新获取", code="sms_code_used")
    if latest.failed_attempts >= SMS_MAX_WRONG_TRIES:
        return _locked(latest, now)
    if latest.expires_at <= now:
        return InvalidInput("验证码已过期，请重新获取", code="sms_code_expired")
    if _code_matches(latest, code):
        return None
    counted = SmsCode.objects.filter(
        pk=latest.pk, used_at__isnull=True, failed_attempts__lt=SMS_MAX_WRONG_TRIES
    ).update(failed_attempts=F("failed_attempts") + 1)
    left = SMS_MAX_WRONG_TRIES - latest.failed_attempts - 1
    if not counted or left <= 0:
        return _locked(latest, now)
    return InvalidInput(f"验证码不正确，还可以再试{left}次", code="sms_code_wrong")


def _locked(latest: SmsCode, now: dt.datetime) -> RateLimited:
    # The code is dead; a new one may be asked for once the resend interval has passed.
    wait = _seconds_until(latest.created_at + SMS_RESEND_INTERVAL, now)
    return RateLimited("验证码错误次数过多，请重新获取", code="sms_code_locked", retry_after=wait)


def issue_token(*, account: Account, user_agent: str = "", client_ip: str | None = None) -> str:
    """A new bearer token (a signed-in device) for `account`; only its SHA-256 is stored."""
    if not account.is_active:
        raise Forbidden("该账号已停用，请联系医院客服", code="account_disabled")
    key = secrets.token_urlsafe(32)
    now = clock.now()
    with transaction.atomic():
        AuthToken.objects.create(
            account=account,
            key_hash=pii.token_hash(key),
            created_at=now,
            last_used_at=now,
            expires_at=now + TOKEN_IDLE,
            user_agent=user_agent[:200],
            client_ip=client_ip or None,
        )
    return key


def touch_token(token: AuthToken) -> None:
    """Record a use: the token lives TOKEN_IDLE more, never past TOKEN_MAX_AGE from sign-in."""
    now = clock.now()
    if token.last_used_at is not None and now - token.last_used_at < TOKEN_TOUCH_EVERY:
        return
    expires = min(now + TOKEN_IDLE, token.created_at + TOKEN_MAX_AGE)
    with transaction.atomic():
        # Compare-and-set on the row: a token ended meanwhile stays ended.
        touched = AuthToken.objects.filter(pk=token.pk, expires_at__gt=now).update(
            last_used_at=now, expires_at=expires
        )
    if touched:
        token.last_used_at, token.expires_at = now, expires
        known_tokens.touched(token)


def logout(*, token: AuthToken) -> None:
    """End the token the request came with; it stops working at once."""
    with transaction.atomic():
        AuthToken.objects.filter(pk=token.pk).delete()
    log.info("signed out", extra={"account_id": token.account_id, "token_id": token.pk})


def end_token(*, account: Account, token_id: int) -> None:
    """End one of the account's signed-in devices. Another account's token is answered like a
    missing one."""
    with transaction.atomic():
        deleted, _ = AuthToken.objects.filter(account=account, pk=token_id).delete()
    if not deleted:
        raise NotFound("登录设备不存在", code="token_not_found")
    log.info("device signed out", extra={"account_id": account.pk, "token_id": token_id})


def end_all_tokens(*, account: Account) -> int:
    """Staff: sign the account out everywhere (a lost phone, a suspected break-in)."""
    with transaction.atomic():
        deleted, _ = AuthToken.objects.filter(account=account).delete()
    log.info("all devices signed out", extra={"account_id": account.pk, "tokens": deleted})
    return deleted


def purge_expired_credentials(*, now: dt.datetime) -> int:
    """Delete what no longer signs anyone in: SMS codes a day past their expiry (the rate limits
    look back one day at most) and expired bearer tokens; and patient-add attempts once past
    ADD_ATTEMPT_RETENTION. Keeps personal data to what is needed."""
    with transaction.atomic():
        codes, _ = SmsCode.objects.filter(expires_at__lt=now - dt.timedelta(days=1)).delete()
        tokens, _ = AuthToken.objects.filter(expires_at__lt=now).delete()
        TokenRevocation.objects.filter(created_at__lt=now - dt.timedelta(days=1)).delete()
        attempts, _ = PatientAddAttempt.objects.filter(
            created_at__lt=now - ADD_ATTEMPT_RETENTION
        ).delete()
    return codes + tokens + attempts


def issue_token_for_phone(*, phone: str) -> str:
    """Sign in without an SMS code (operator and developer tool: `guahao token --phone`)."""
    phone = validate_phone(phone)
    with transaction.atomic():
        account = _account_for_phone(phone, _phone_index(phone))
        key = issue_token(account=account)
    log.info("token issued without sms code", extra={"account_id": account.pk})
    return key


def _account_for_phone(phone: str, phone_index: str) -> Account:
    # Found under any index key (a retired key's digest until rotate-keys reaches the row).
    found = Account.objects.filter(phone_index__in=_phone_indexes(phone)).first()
    if found is not None:
        return found
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


def _phone_indexes(phone: str) -> list[str]:
    return pii.blind_indexes(phone, purpose="phone")


def _code_matches(sms_code: SmsCode, code: str) -> bool:
    # Any index key: a code issued just before the index key changed still signs in.
    digests = pii.blind_indexes(f"{sms_code.phone_index}:{code}", purpose="sms-code")
    return any(hmac.compare_digest(sms_code.code_hash, digest) for digest in digests)


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

# What a refused add is recorded as for staff (PatientAddAttempt.outcome), by the refusal's code.
_REFUSAL_OUTCOMES = {
    "rate_limited": PatientAddAttempt.Outcome.RATE_LIMITED,
    "realname_rejected": PatientAddAttempt.Outcome.REALNAME_REJECTED,
    "realname_unavailable": PatientAddAttempt.Outcome.UNAVAILABLE,
    "patient_exists": PatientAddAttempt.Outcome.EXISTS,
    "self_exists": PatientAddAttempt.Outcome.REFUSED,
    "patient_limit": PatientAddAttempt.Outcome.REFUSED,
}


def add_patient(
    *,
    account: Account,
    name: str,
    id_type: str,
    id_number: str,
    phone: str,
    relation: str,
    client_ip: str,
) -> Patient:
    """Add a real-name visiting patient to `account`, as that account's own record.

    Every attempt counts against the `patient_add_account` and `patient_add_ip` limits (refused
    ones too) and is recorded for staff (PatientAddAttempt). The identity is always verified with
    the real-name service, and nothing outside this account is looked up: the answer, and the work
    done, are the same whether or not another account has the same person. The record holds only
    what this account typed plus what the ID number encodes (sex, birth date). At most
    MAX_PATIENTS_PER_ACCOUNT active patients per account, one 本人, each person once.
    """
    # Best effort, for the staff record only: the real refusal comes in order below.
    try:
        id_index = identity_index(parse_id_number(id_number, id_type=id_type))
    except InvalidInput:
        id_index = ""
    try:
        patient = _add_patient(
            account=account,
            name=name,
            id_type=id_type,
            id_number=id_number,
            phone=phone,
            relation=relation,
            client_ip=client_ip,
        )
    except GuahaoError as exc:
        outcome = _REFUSAL_OUTCOMES.get(exc.code, PatientAddAttempt.Outcome.INVALID)
        _record_attempt(account=account, client_ip=client_ip, id_index=id_index, outcome=outcome)
        raise
    _record_attempt(
        account=account,
        client_ip=client_ip,
        id_index=id_index,
        outcome=PatientAddAttempt.Outcome.ADDED,
        patient=patient,
    )
    return patient


def _add_patient(
    *,
    account: Account,
    name: str,
    id_type: str,
    id_number: str,
    phone: str,
    relation: str,
    client_ip: str,
) -> Patient:
    # Counted first and outside any transaction: a refused or rolled-back try still counts.
    limits.hit("patient_add_account", account.pk, ("patient_add_ip", client_ip))
    name = validate_name(name)
    identity = parse_id_number(id_number, id_type=id_type)
    phone = validate_phone(phone)
    if relation not in Patient.Relation.values:
        raise InvalidInput("与就诊人关系应为本人、配偶、子女、父母或其他", code="invalid_relation")
    id_index = identity_index(identity)
    person = identity_indexes(identity)  # every index key: a duplicate under a retired key counts
    # Refusals that depend on this account's own list only, before the paid verification call.
    _check_room(account=account, id_indexes=person, relation=relation)
    # Always verified, even if the person is on file under another account: whether anyone has
    # this ID must not change the answer or its timing (a name oracle otherwise).
    _verify_realname(name=name, id_type=identity.id_type, id_number=identity.number)

    with transaction.atomic():
        # Lock the account row: concurrent adds for one account queue here (count and 本人 rules).
        list(Account.objects.select_for_update().filter(pk=account.pk).values_list("pk", flat=True))
        _check_room(account=account, id_indexes=person, relation=relation)
        try:
            with transaction.atomic():
                patient = Patient.objects.create(
                    account=account,
                    relation=relation,
                    name=name,
                    name_index=pii.blind_index(name, purpose="name"),
                    id_type=identity.id_type,
                    id_number=identity.number,
                    id_index=id_index,
                    sex=identity.sex,
                    birth_date=identity.birth_date,
                    phone=phone,
                    phone_index=_phone_index(phone),
                    verified_at=clock.now(),
                    # The first patient of a list is its default (the booking pages preselect it).
                    is_default=not Patient.objects.filter(
                        account=account, removed_at__isnull=True, is_default=True
                    ).exists(),
                )
        except IntegrityError as exc:  # only without the account lock (it queues these on both DBs)
            raise Conflict("该就诊人已在您的就诊人列表中", code="patient_exists") from exc
    log.info(
        "patient added",
        extra={"account_id": account.pk, "patient_id": patient.pk, "relation": relation},
    )
    return patient


def remove_patient(*, account: Account, patient_id: int) -> None:
    """Take a patient off `account`'s list. The record stays, marked removed and hidden (holds and
    registrations refer to it); the same person may be added again as a new record. Another
    account's patient, or one already removed, is answered exactly like a missing one (NotFound)."""
    with transaction.atomic():
        removed = Patient.objects.filter(
            id=patient_id, account=account, removed_at__isnull=True
        ).update(removed_at=clock.now(), is_default=False)
    if not removed:
        raise NotFound("就诊人不存在", code="patient_not_found")
    log.info("patient removed", extra={"account_id": account.pk, "patient_id": patient_id})


def set_default_patient(*, account: Account, patient_id: int) -> Patient:
    """Make one of `account`'s active patients its default (默认就诊人), the one the booking pages
    preselect; the previous default stops being one in the same transaction. Another account's
    patient, or a removed one, is answered exactly like a missing one (NotFound)."""
    with transaction.atomic():
        # Lock the account row: two devices choosing at once queue here, not on the unique index.
        list(Account.objects.select_for_update().filter(pk=account.pk).values_list("pk", flat=True))
        patient = Patient.objects.filter(id=patient_id, account=account, removed_at__isnull=True).first()
        if patient is None:
            raise NotFound("就诊人不存在", code="patient_not_found")
        Patient.objects.filter(account=account, is_default=True).exclude(id=patient.id).update(
            is_default=False
        )
        Patient.objects.filter(id=patient.id, removed_at__isnull=True).update(is_default=True)
    patient.is_default = True
    log.info("default patient set", extra={"account_id": account.pk, "patient_id": patient.pk})
    return patient


def _check_room(*, account: Account, id_indexes: list[str], relation: str) -> None:
    active = Patient.objects.filter(account=account, removed_at__isnull=True)
    if active.filter(id_index__in=id_indexes).exists():
        raise Conflict("该就诊人已在您的就诊人列表中", code="patient_exists")
    if relation == Patient.Relation.SELF and active.filter(relation=Patient.Relation.SELF).exists():
        raise Conflict("每个账号只能添加一位“本人”", code="self_exists")
    if active.count() >= MAX_PATIENTS_PER_ACCOUNT:
        raise Conflict(f"每个账号最多添加{MAX_PATIENTS_PER_ACCOUNT}位就诊人", code="patient_limit")


def _record_attempt(
    *,
    account: Account,
    client_ip: str,
    id_index: str,
    outcome: str,
    patient: Patient | None = None,
) -> None:
    # Its own transaction, after the add's own has ended: a refusal is recorded as well.
    with transaction.atomic():
        PatientAddAttempt.objects.create(
            account=account,
            client_ip=client_ip or None,
            id_index=id_index,
            outcome=outcome,
            patient=patient,
            created_at=clock.now(),
        )


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
