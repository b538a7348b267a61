"""Builders for tests: a small hospital world made through the models, and an API client that signs
in with a bearer token. Tests of every app use these, so they share one picture of the world."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import secrets
from dataclasses import dataclass
from typing import Any

from django.test import Client

from guahao import clock, pii
from guahao.catalog.models import Department, Doctor, Hospital, Notice
from guahao.patients.idcard import identity_index, parse_id_number
from guahao.patients.models import Account, AuthToken, Patient
from guahao.scheduling.models import RegistrationType, ReleaseRule, Session, Slot

_seq = itertools.count(1)


def make_hospital(**fields: Any) -> Hospital:
    n = next(_seq)
    hospital = Hospital.objects.create(
        code=fields.pop("code", f"H{n}"),
        name=fields.pop("name", f"测试医院{n}"),
        service_phone=fields.pop("service_phone", "0571-88888888"),
        **fields,
    )
    ReleaseRule.objects.create(hospital=hospital, release_time=dt.time(0, 0), window_days=14, lock_minutes=10)
    RegistrationType.objects.create(hospital=hospital, code="PT", name="普通号", default_fee_fen=1000)
    Notice.objects.create(hospital=hospital, title="挂号须知", body="请按时就诊。", version=1)
    return hospital


def make_department(hospital: Hospital, *, name: str = "心血管内科", parent: Department | None = None) -> Department:
    n = next(_seq)
    return Department.objects.create(
        hospital=hospital, parent=parent, level=(parent.level + 1) if parent else 1, code=f"D{n}", name=name
    )


def make_doctor(department: Department, *, name: str = "王医生", title: str = Doctor.Title.CHIEF) -> Doctor:
    n = next(_seq)
    return Doctor.objects.create(
        hospital=department.hospital, department=department, code=f"DR{n}", name=name, title=title
    )


def make_session(
    department: Department,
    *,
    doctor: Doctor | None = None,
    day: dt.date | None = None,
    slots: int = 4,
    per_window: int = 1,
    fee_fen: int = 1000,
    start: dt.time = dt.time(8, 0),
    window_minutes: int = 30,
    status: str = Session.Status.OPEN,
) -> Session:
    """A session `day` (default tomorrow) with `slots` numbers, `per_window` numbers per time window."""
    day = day or clock.today() + dt.timedelta(days=1)
    starts_at = clock.at_local(day, start)
    windows = -(-slots // per_window)
    ends_at = starts_at + dt.timedelta(minutes=window_minutes * windows)
    session = Session.objects.create(
        hospital=department.hospital,
        department=department,
        doctor=doctor,
        registration_type=RegistrationType.objects.filter(hospital=department.hospital).first(),
        date=day,
        period=Session.Period.MORNING if start.hour < 12 else Session.Period.AFTERNOON,
        starts_at=starts_at,
        ends_at=ends_at,
        fee_fen=fee_fen,
        capacity=slots,
        status=status,
    )
    Slot.objects.bulk_create(
        Slot(
            session=session,
            seq=i + 1,
            window_start=starts_at + dt.timedelta(minutes=window_minutes * (i // per_window)),
            window_end=starts_at + dt.timedelta(minutes=window_minutes * (i // per_window + 1)),
        )
        for i in range(slots)
    )
    return session


def make_phone() -> str:
    return f"139{next(_seq) % 100000000:08d}"


def make_account(phone: str | None = None) -> Account:
    phone = phone or make_phone()
    return Account.objects.create(phone=phone, phone_index=pii.blind_index(phone, purpose="phone"))


def make_accounts(count: int) -> list[Account]:
    phones = [make_phone() for _ in range(count)]
    Account.objects.bulk_create(
        Account(phone=p, phone_index=pii.blind_index(p, purpose="phone")) for p in phones
    )
    return list(Account.objects.filter(phone_index__in=[pii.blind_index(p, purpose="phone") for p in phones]))


def id_number_with_check(first17: str) -> str:
    """Append the GB 11643 MOD 11-2 check character."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(c) * w for c, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[total % 11]


def make_id_number(birth: str = "19900307") -> str:
    return id_number_with_check(f"110105{birth}{next(_seq) % 1000:03d}")


# Every name and birth date make_patient gave a patient in this run: the whole-run log check
# (guahao/conftest.py) looks for each of them in clear.
PATIENT_NAMES: set[str] = set()
PATIENT_BIRTH_DATES: set[dt.date] = set()


def make_patient(
    account: Account, *, name: str = "张三", relation: str = "self", id_number: str | None = None, phone: str | None = None
) -> Patient:
    """A verified visiting patient of `account` (its own record; the same `id_number` under another
    account is the same real person)."""
    id_number = id_number or make_id_number()
    phone = phone or make_phone()
    PATIENT_NAMES.add(name)
    PATIENT_BIRTH_DATES.add(parse_id_number(id_number).birth_date)
    return Patient.objects.create(
        account=account,
        relation=relation,
        name=name,
        name_index=pii.blind_index(name, purpose="name"),
        id_type=Patient.IdType.RESIDENT,
        id_number=id_number,
        id_index=identity_index(parse_id_number(id_number)),
        sex=Patient.Sex.MALE if int(id_number[16]) % 2 else Patient.Sex.FEMALE,
        birth_date=dt.date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14])),
        phone=phone,
        phone_index=pii.blind_index(phone, purpose="phone"),
        verified_at=clock.now(),
    )


def token_for(account: Account) -> str:
    key = secrets.token_urlsafe(32)
    AuthToken.objects.create(
        account=account,
        key_hash=pii.token_hash(key),
        created_at=clock.now(),
        last_used_at=clock.now(),
        expires_at=clock.now() + dt.timedelta(days=30),
    )
    return key


_addresses = itertools.count(1)


def make_ip() -> str:
    """A fresh client address (in 100.64.0.0/10, shared address space), so each
    simulated patient meets the per-address limits on their own, as on real phones."""
    n = next(_addresses)
    return f"100.{64 + (n >> 16) % 64}.{(n >> 8) % 256}.{n % 256}"


@dataclass
class ApiClient:
    """JSON over Django's test client, signed in as one account (or anonymous), from its own
    address."""

    token: str | None = None
    ip: str = dataclasses.field(default_factory=make_ip)

    def __post_init__(self) -> None:
        self.client = Client(REMOTE_ADDR=self.ip)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, **params: Any):
        return self.client.get(path, params, headers=self._headers())

    def post(self, path: str, body: dict | None = None):
        return self.client.post(path, json.dumps(body or {}), content_type="application/json", headers=self._headers())

    def delete(self, path: str):
        return self.client.delete(path, headers=self._headers())


def api_client(account: Account | None = None) -> ApiClient:
    return ApiClient(token=token_for(account) if account else None)


# --- concurrency and the payment sandbox ------------------------------------------------------------


def run_concurrently(calls: list, *, timeout: float = 120) -> list[tuple[bool, Any]]:
    """Run each call in its own thread, all released at once by a barrier. Returns (ok, result or
    exception) per call. Every thread closes its database connections (or returns them to the pool)."""
    import threading

    from django.db import connections

    barrier = threading.Barrier(len(calls))
    results: list[tuple[bool, Any]] = [(False, None)] * len(calls)

    def runner(i: int, call) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[i] = (True, call())
        except Exception as exc:  # collected for the test to assert on
            results[i] = (False, exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=runner, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results


_payment_sandbox = None


def use_payment_sandbox(gateway) -> None:
    """Called once by the root conftest with the sandbox gateway it serves."""
    global _payment_sandbox
    _payment_sandbox = gateway


def payment_sandbox():
    """The sandbox gateway of this test run (guahao.payments.sandbox.SandboxGateway)."""
    assert _payment_sandbox is not None, "the root conftest starts the payment sandbox"
    return _payment_sandbox


def pay_at_provider(out_trade_no: str, *, succeed: bool = True):
    """The patient confirms (or cancels) on the provider's cashier. The trade must exist there: a
    WeChat order does once created; an Alipay one once its pay URL was opened (open_pay_page)."""
    return payment_sandbox().pay(out_trade_no, succeed=succeed)


def open_pay_page(pay_url: str) -> int:
    """The patient's browser opens the provider's pay page (for Alipay this creates the trade)."""
    import urllib.request

    with urllib.request.urlopen(pay_url, timeout=5) as response:  # noqa: S310 (loopback sandbox)
        return response.status


def pay_on_cashier(pay_url: str, *, action: str = "pay") -> tuple[int, str]:
    """The patient opens the provider's pay page and presses 确认支付 (action "pay") or 取消支付
    ("cancel"), over HTTP as the browser would. Returns (status, where it sends the browser)."""
    import html
    import re
    import urllib.error
    import urllib.parse
    import urllib.request

    with urllib.request.urlopen(pay_url, timeout=5) as response:  # noqa: S310 (loopback sandbox)
        page = response.read().decode("utf-8")
    form = re.search(r'<form method="post" action="([^"]*)"', page)
    assert form is not None, page
    target = urllib.parse.urljoin(pay_url, html.unescape(form.group(1)))

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    data = urllib.parse.urlencode({"action": action}).encode()
    try:
        with opener.open(urllib.request.Request(target, data=data, method="POST"), timeout=5) as answer:
            return answer.status, answer.headers.get("Location", "")
    except urllib.error.HTTPError as error:  # 303 lands here without a redirect handler
        return error.code, error.headers.get("Location", "")


def client_send(url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """Deliver a provider notification to our callback in-process, as the provider's HTTP POST would
    (WeChat's JSON, Alipay's form); returns the status and body of our reply."""
    from urllib.parse import urlsplit

    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "application/json")
    others = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
    response = Client().post(urlsplit(url).path, body, content_type=content_type, headers=others)
    return response.status_code, response.content


def deliver_notifications() -> int:
    """The sandbox sends every notification that is due, to our callback. Returns how many."""
    total = 0
    while (sent := payment_sandbox().deliver_due(send=client_send)) > 0:
        total += sent
    return total


def run_worker() -> int:
    """The provider's due notifications, then worker passes until there is nothing left to do.
    Returns work done."""
    from guahao.worker import run_once

    total = 0
    while (done := deliver_notifications() + run_once(worker_id="test")) > 0:
        total += done
    return total


def wrap_provider(monkeypatch, wrap) -> None:
    """Every provider call of the payment services goes through `wrap(real adapter)`: a test's way
    to make the provider refuse, stay silent or lie (payments.providers.faulty.FaultyProvider)."""
    from guahao.payments import providers, services

    monkeypatch.setattr(services, "for_merchant", lambda merchant: wrap(providers.for_merchant(merchant)))
    monkeypatch.setattr(services, "for_payment", lambda payment: wrap(providers.for_payment(payment)))
