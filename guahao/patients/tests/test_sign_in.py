"""Signing in with an SMS code: one code a minute, ten a day, five minutes to live, one use, five
wrong tries; the token that comes out authenticates for thirty days."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pytest
from django.db import connection, connections

from guahao import clock, pii
from guahao.errors import InvalidInput, RateLimited
from guahao.patients import selectors, services
from guahao.patients.models import Account, AuthToken, SmsCode
from guahao.patients.sms.log import LogSmsSender
from guahao.testing import make_account, make_phone

pytestmark = pytest.mark.django_db

# Distinct per test module so address limits never carry over between files.
IP = "198.51.100.7"


def test_a_code_is_six_digits_and_stored_only_as_a_keyed_hash(sms_outbox) -> None:
    phone = make_phone()

    services.send_sms_code(phone=phone, client_ip=IP)

    code = sms_outbox.last_code(phone)
    stored = SmsCode.objects.get()
    assert len(code) == 6 and code.isdigit()
    assert stored.phone_index == pii.blind_index(phone, purpose="phone")
    assert code not in stored.code_hash and len(stored.code_hash) == 64
    assert stored.expires_at - stored.created_at == dt.timedelta(minutes=5)


def test_a_second_code_within_60_seconds_is_refused_with_the_wait(sms_outbox) -> None:
    phone = make_phone()
    services.send_sms_code(phone=phone, client_ip=IP)

    with clock.travel(dt.timedelta(seconds=45)), pytest.raises(RateLimited) as refused:
        services.send_sms_code(phone=phone, client_ip=IP)

    assert refused.value.status == 429
    assert "请15秒后再试" in refused.value.message
    assert refused.value.detail["retry_after"] == 15
    with clock.travel(dt.timedelta(seconds=60)):
        services.send_sms_code(phone=phone, client_ip=IP)
    assert len(sms_outbox.sent) == 2


def test_the_resend_limit_is_per_phone(sms_outbox) -> None:
    services.send_sms_code(phone=make_phone(), client_ip=IP)
    services.send_sms_code(phone=make_phone(), client_ip=IP)

    assert len(sms_outbox.sent) == 2


def test_at_most_ten_codes_per_phone_per_day(sms_outbox) -> None:
    phone = make_phone()
    # Start just after local midnight so that all eleven requests fall on one calendar day.
    with clock.frozen_at(clock.at_local(clock.today() + dt.timedelta(days=1), dt.time(0, 1))):
        for minute in range(services.SMS_DAILY_LIMIT):
            with clock.travel(dt.timedelta(minutes=minute)):
                # From many addresses: this is the phone's own limit, not an address's.
                services.send_sms_code(phone=phone, client_ip=f"203.0.{minute}.9")
        with clock.travel(dt.timedelta(minutes=30)), pytest.raises(RateLimited) as refused:
            services.send_sms_code(phone=phone, client_ip="203.0.99.9")
        with clock.travel(dt.timedelta(days=1)):
            services.send_sms_code(phone=phone, client_ip=IP)

    assert "今日获取验证码已达10次" in refused.value.message
    assert len(sms_outbox.sent) == services.SMS_DAILY_LIMIT + 1


def test_login_creates_the_account_with_an_encrypted_phone(sms_outbox) -> None:
    phone = make_phone()
    services.send_sms_code(phone=phone, client_ip=IP)

    token = services.login(phone=phone, code=sms_outbox.last_code(phone), client_ip=IP)

    account = selectors.account_for_token(token)
    assert account is not None
    assert account.phone == phone
    assert account.phone_index == pii.blind_index(phone, purpose="phone")
    with connection.cursor() as cursor:
        cursor.execute("SELECT phone FROM patients_account WHERE id = %s", [account.pk])
        (stored,) = cursor.fetchone()
    assert stored.startswith("v1:") and phone not in stored


def test_login_signs_in_to_the_existing_account(sms_outbox) -> None:
    account = make_account()
    services.send_sms_code(phone=account.phone, client_ip=IP)

    token = services.login(phone=account.phone, code=sms_outbox.last_code(account.phone), client_ip=IP)

    assert selectors.account_for_token(token) == account
    assert Account.objects.count() == 1


def test_a_code_works_only_once(sms_outbox) -> None:
    phone = make_phone()
    services.send_sms_code(phone=phone, client_ip=IP)
    code = sms_outbox.last_code(phone)
    services.login(phone=phone, code=code, client_ip=IP)

    with pytest.raises(InvalidInput, match="验证码已使用，请重新获取"):
        services.login(phone=phone, code=code, client_ip=IP)
    assert AuthToken.objects.count() == 1


def test_a_code_expires_after_five_minutes(sms_outbox) -> None:
    phone = make_phone()
    services.send_sms_code(phone=phone, client_ip=IP)
    code = sms_outbox.last_code(phone)

    with clock.travel(dt.timedelta(minutes=5)), pytest.raises(InvalidInput, match="验证码已过期"):
        services.login(phone=phone, code=code, client_ip=IP)
    with clock.travel(dt.timedelta(minutes=4, seconds=59)):
        assert services.login(phone=phone, code=code, client_ip=IP)


def test_five_wrong_tries_kill_the_code(sms_outbox) -> None:
    phone = make_phone()
    services.send_sms_code(phone=phone, client_ip=IP)
    code = sms_outbox.last_code(phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    messages = []
    for _ in range(services.SMS_MAX_WRONG_TRIES):
        with pytest.raises((InvalidInput, RateLimited)) as refused:
            services.login(phone=phone, code=wrong, client_ip=IP)
        messages.append(refused.value.message)
    with pytest.raises(RateLimited, match="验证码错误次数过多，请重新获取"):
        services.login(phone=phone, code=code, client_ip=IP)

    assert messages[0] == "验证码不正确，还可以再试4次"
    assert messages[3] == "验证码不正确，还可以再试1次"
    assert messages[4] == "验证码错误次数过多，请重新获取"
    assert SmsCode.objects.get().failed_attempts == services.SMS_MAX_WRONG_TRIES
    assert not AuthToken.objects.exists()


def test_a_new_code_replaces_the_old_one(sms_outbox) -> None:
    phone = make_phone()
    services.send_sms_code(phone=phone, client_ip=IP)
    old = sms_outbox.last_code(phone)
    with clock.travel(dt.timedelta(seconds=61)):
        services.send_sms_code(phone=phone, client_ip=IP)
        new = sms_outbox.last_code(phone)
        if old != new:
            with pytest.raises(InvalidInput):
                services.login(phone=phone, code=old, client_ip=IP)
        assert services.login(phone=phone, code=new, client_ip=IP)


def test_login_without_a_code_sent_is_refused(sms_outbox) -> None:
    with pytest.raises(InvalidInput, match="请先获取验证码"):
        services.login(phone=make_phone(), code="123456", client_ip=IP)


@pytest.mark.parametrize("code", ["12345", "1234567", "abcdef", ""])
def test_a_code_must_be_six_digits(code: str) -> None:
    with pytest.raises(InvalidInput, match="验证码应为6位数字"):
        services.login(phone=make_phone(), code=code, client_ip=IP)


def test_an_invalid_phone_gets_no_code(sms_outbox) -> None:
    with pytest.raises(InvalidInput, match="手机号格式不正确"):
        services.send_sms_code(phone="1234", client_ip=IP)
    assert sms_outbox.sent == []


def test_tokens_expire_after_thirty_days() -> None:
    account = make_account()
    token = services.issue_token(account=account)

    assert selectors.account_for_token(token) == account
    with clock.travel(dt.timedelta(days=30)):
        assert selectors.account_for_token(token) is None
    assert selectors.account_for_token(token + "x") is None
    assert AuthToken.objects.get().key_hash == pii.token_hash(token)


def test_a_disabled_account_signs_in_no_more() -> None:
    account = make_account()
    token = services.issue_token(account=account)
    Account.objects.filter(pk=account.pk).update(is_active=False)

    assert selectors.account_for_token(token) is None


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_log_channel_logs_the_code_but_masks_the_phone() -> None:
    # Attached to "guahao.sms" itself, this handler sees the record before any masking filter.
    handler = _Records()
    logger = logging.getLogger("guahao.sms")
    logger.addHandler(handler)
    try:
        LogSmsSender().send_code("13812345678", "654321")
    finally:
        logger.removeHandler(handler)

    (record,) = handler.records
    everything = record.getMessage() + repr(vars(record))
    assert "654321" in record.getMessage()
    assert "138****5678" in record.getMessage()
    assert "13812345678" not in everything


def test_send_sms_code_uses_the_configured_log_channel(settings) -> None:
    settings.SMS_CHANNEL = "log"
    handler = _Records()
    logger = logging.getLogger("guahao.sms")
    logger.addHandler(handler)
    try:
        services.send_sms_code(phone="13912345678", client_ip=IP)
    finally:
        logger.removeHandler(handler)

    assert [r.getMessage().startswith("sms code ") for r in handler.records] == [True]
    assert "13912345678" not in repr(vars(handler.records[0]))


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_logins_with_one_code_get_one_token(sms_outbox) -> None:
    phone = make_phone()
    services.send_sms_code(phone=phone, client_ip=IP)
    code = sms_outbox.last_code(phone)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            barrier.wait()
            services.login(phone=phone, code=code, client_ip=IP)
            outcomes.append("token")
        except InvalidInput:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(outcomes) == ["refused", "token"]
    assert AuthToken.objects.count() == 1


@pytest.mark.django_db
def test_expired_codes_and_tokens_are_purged():
    from guahao.patients.services import purge_expired_credentials
    from guahao.testing import token_for

    services.send_sms_code(phone="13511112222", client_ip=IP)
    token_for(make_account())
    assert purge_expired_credentials(now=clock.now()) == 0
    later = clock.now() + dt.timedelta(days=31)
    assert purge_expired_credentials(now=later) == 2
    assert not SmsCode.objects.exists() and not AuthToken.objects.exists()


@pytest.mark.django_db
def test_patient_add_attempts_are_kept_six_months() -> None:
    from guahao.patients.models import PatientAddAttempt
    from guahao.patients.services import purge_expired_credentials

    account = make_account()
    PatientAddAttempt.objects.create(
        account=account, client_ip=IP, outcome="realname_rejected", created_at=clock.now()
    )
    assert purge_expired_credentials(now=clock.now() + dt.timedelta(days=180)) == 0
    assert purge_expired_credentials(now=clock.now() + dt.timedelta(days=184)) == 1
