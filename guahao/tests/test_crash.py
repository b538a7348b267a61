"""Crash and restart tests with real processes on PostgreSQL.

1. Ten seeded rounds of a booking run over HTTP (hold, confirm, pay at the sandbox cashier,
   我已支付, some cancellations) while the web server, the scheduler and a worker are killed with
   SIGKILL at random moments and started again. Every hold the patient was shown and every payment
   the provider took must survive: each payment ends as a registration or a full refund, and
   `guahao ledger-check` finds nothing.
2. The database itself is restarted in the middle of a run (a private cluster, so no other test's
   database moves): meanwhile every request is answered at once with 503 and a Chinese message,
   afterwards the same web process serves again without being restarted, and nothing acknowledged
   before the restart is lost.

A failure names the seed and the crashes in turn; GUAHAO_CRASH_SEED=N makes the same choices (which
process, when, which patient cancels) again, though not the same timing. The processes' logs are
in the test's tmp_path."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connection, connections

from guahao.booking.models import Hold, Registration
from guahao.booking.states import HoldState, RegistrationStatus
from guahao.booking.tests.conftest import ready_to_book
from guahao.catalog.models import Hospital
from guahao.ledger import find_violations
from guahao.notifications.models import Lease
from guahao.payments.models import Payment, Refund
from guahao.testing import (
    make_account,
    make_department,
    make_doctor,
    make_hospital,
    make_session,
    pay_on_cashier,
    token_for,
)
from guahao.tests import processes
from guahao.tests.processes import PrivateCluster, Site, wait_for

ROUNDS = 10
PATIENTS_PER_ROUND = 4
SEED = int(os.environ.get("GUAHAO_CRASH_SEED", "20261127"))
BUSY = "系统繁忙，请稍后重试"
# Answers that mean "not now, try again": the web process or the database is down or restarting,
# or every permit of the web process is taken.
RETRY_STATUSES = {429, 502, 503, 504}
# The test's own settings for the processes: a killed worker's claimed event and a killed
# scheduler's lease are taken over within seconds, not the production minute.
FAST_TAKEOVER = {"GUAHAO_EVENT_LEASE_SECONDS": "3", "GUAHAO_SCHEDULER_LEASE_SECONDS": "2"}


def crash_test(test: Callable) -> Callable:
    """Needs PostgreSQL, and commits what it makes: the processes read it."""
    return pytest.mark.postgres(pytest.mark.django_db(transaction=True)(test))


# --- the patients, over HTTP --------------------------------------------------------------------


@dataclass
class HttpPatient:
    account_id: int
    token: str
    patient_id: int
    channel: str  # wechat or alipay


@dataclass
class Acknowledged:
    """What the run was told: holds answered 201 (or shown in 我的锁号), payments the provider's
    cashier took, cancellations answered 200."""

    holds: dict[int, int] = field(default_factory=dict)  # hold id → account id
    tokens: dict[int, str] = field(default_factory=dict)  # hold id → its patient's sign-in token
    payments: dict[str, int] = field(default_factory=dict)  # out_trade_no → hold id
    cancelled: set[int] = field(default_factory=set)  # registration ids
    statuses: Counter = field(default_factory=Counter)  # every HTTP status the patients were given
    refusals: list[str] = field(default_factory=list)  # 4xx answers other than 429: step and code
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, hold_id: int, account_id: int, token: str) -> None:
        with self.lock:
            self.holds[hold_id] = account_id
            self.tokens[hold_id] = token

    def payment(self, out_trade_no: str, hold_id: int) -> None:
        with self.lock:
            self.payments[out_trade_no] = hold_id


class Patience:
    """A patient who refreshes while the site is down, until `deadline`."""

    def __init__(self, client: httpx.Client, deadline: float, ack: Acknowledged) -> None:
        self.client = client
        self.deadline = deadline
        self.ack = ack

    def _send(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        response = self.client.request(method, path, json=body)
        with self.ack.lock:
            self.ack.statuses[response.status_code] += 1
            if 400 <= response.status_code < 500 and response.status_code != 429:
                step = path.rstrip("/").rsplit("/", 1)[-1]
                self.ack.refusals.append(f"{method} {step}: {response.status_code} {response.text[:120]}")
        return response

    def call(self, method: str, path: str, body: dict | None = None) -> httpx.Response | None:
        """The answer, or None when the site never answered in time. Only for requests that may
        safely be sent twice (reads, and writes whose second sending changes nothing)."""
        while time.monotonic() < self.deadline:
            try:
                response = self._send(method, path, body)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if response.status_code not in RETRY_STATUSES:
                return response
            time.sleep(0.2)
        return None

    def hold(self, slot_id: int) -> int | None:
        """POST /holds. When an answer was lost or refused the hold may exist all the same (its
        commit went through, the answer did not): the patient looks at 我的锁号 before trying
        again, and before giving up."""
        failed = False
        while time.monotonic() < self.deadline:
            if failed and (mine := self._listed(slot_id)):
                return mine
            try:
                response = self._send("POST", "/api/v1/holds", {"slot_id": slot_id})
            except httpx.TransportError:
                failed = True
                continue
            if response.status_code == 201:
                return response.json()["id"]
            if response.status_code not in RETRY_STATUSES:
                # Taken, or refused by a rule: nothing was promised, unless an earlier try won.
                return self._listed(slot_id) if failed else None
            failed = True
            time.sleep(0.2)
        return None

    def _listed(self, slot_id: int) -> int | None:
        listed = self.call("GET", "/api/v1/holds")
        if listed is None or listed.status_code != 200:
            return None
        return next((h["id"] for h in listed.json() if h["slot"]["id"] == slot_id), None)


def book(base_url: str, patient: HttpPatient, slot_id: int, ack: Acknowledged, *, cancel: bool, deadline: float) -> None:
    """One patient's booking: hold, confirm, pay, pay at the cashier, 我已支付, maybe cancel."""
    headers = {"Authorization": f"Bearer {patient.token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=5) as client:
        patience = Patience(client, deadline, ack)
        hold_id = patience.hold(slot_id)
        if hold_id is None:
            return
        ack.hold(hold_id, patient.account_id, patient.token)
        confirmed = patience.call(
            "POST", f"/api/v1/holds/{hold_id}/confirm", {"patient_id": patient.patient_id, "channel": patient.channel}
        )
        if confirmed is None or confirmed.status_code != 200:
            return
        # Opening an order twice closes the first one: safe to send again.
        order = patience.call("POST", f"/api/v1/holds/{hold_id}/pay")
        if order is None or order.status_code != 200:
            return
        status, _ = pay_on_cashier(order.json()["pay_url"])
        if status != 303:
            return
        ack.payment(order.json()["out_trade_no"], hold_id)
        checked = patience.call("POST", f"/api/v1/holds/{hold_id}/pay/check")
        if not cancel or checked is None or checked.status_code != 200:
            return
        registration_id = checked.json()["registration_id"]
        if registration_id is None:
            return
        answer = patience.call("POST", f"/api/v1/registrations/{registration_id}/cancel")
        if answer is not None and answer.status_code == 200:
            with ack.lock:
                ack.cancelled.add(registration_id)


def make_patients(hospital: Hospital, count: int, rng: random.Random) -> list[HttpPatient]:
    patients = []
    for _ in range(count):
        account = make_account()
        patient = ready_to_book(account, hospital)
        channel = rng.choice(["wechat", "alipay"])
        patients.append(HttpPatient(account.id, token_for(account), patient.id, channel))
    return patients


def make_hospital_for_run() -> tuple[Hospital, object]:
    hospital = make_hospital()
    Hospital.objects.filter(id=hospital.id).update(payment_channels=["wechat", "alipay"])
    department = make_department(hospital, name="心血管内科", parent=make_department(hospital, name="内科"))
    return hospital, make_doctor(department, name="李建国")


# --- what must hold after a run -------------------------------------------------------------------


def payment_outcome(out_trade_no: str) -> str:
    """"registered", "refunded", or what it still waits for."""
    payment = Payment.objects.filter(out_trade_no=out_trade_no).first()
    if payment is None:
        return "missing"
    if payment.state != Payment.State.PAID:
        return f"payment {payment.state}"
    refunded = sum(
        r.amount_fen for r in Refund.objects.filter(payment=payment, state=Refund.State.SUCCEEDED)
    )
    hold = Hold.objects.get(id=payment.hold_id)
    registration = Registration.objects.filter(hold=hold).first()
    if hold.state == HoldState.SUCCEEDED and hold.payment_id == payment.id and registration is not None:
        if registration.status == RegistrationStatus.CANCELLED and refunded == payment.amount_fen:
            return "refunded"
        if registration.status == RegistrationStatus.BOOKED:
            return "registered"
        return f"registration {registration.status}"
    if refunded == payment.amount_fen:
        return "refunded"
    return f"hold {hold.state}, refunded {refunded} of {payment.amount_fen}"


def assert_nothing_acknowledged_is_lost(ack: Acknowledged, *, seed: object) -> None:
    holds = {h.id: h for h in Hold.objects.filter(id__in=ack.holds)}
    assert set(holds) == set(ack.holds), f"seed {seed}: acknowledged holds lost: {set(ack.holds) - set(holds)}"
    for hold_id, account_id in ack.holds.items():
        assert holds[hold_id].account_id == account_id, f"seed {seed}: hold {hold_id} changed hands"
    outcomes = {no: payment_outcome(no) for no in ack.payments}
    unsettled = {no: o for no, o in outcomes.items() if o not in ("registered", "refunded")}
    assert not unsettled, f"seed {seed}: paid but neither registered nor refunded: {unsettled}"
    for registration_id in ack.cancelled:
        status = Registration.objects.get(id=registration_id).status
        assert status == RegistrationStatus.CANCELLED, f"seed {seed}: cancelled registration {registration_id} is {status}"


def settled(ack: Acknowledged) -> bool:
    if any(payment_outcome(no) not in ("registered", "refunded") for no in ack.payments):
        return False
    return not Registration.objects.filter(id__in=ack.cancelled).exclude(status=RegistrationStatus.CANCELLED).exists()


def wait_until_settled(base_url: str, ack: Acknowledged, *, timeout: float, what: str) -> None:
    """Until every acknowledged payment has its outcome. Meanwhile each patient whose hold is
    still paying refreshes the result page now and then (我已支付), as the H5 page does."""
    deadline = time.monotonic() + timeout
    while not settled(ack):
        assert time.monotonic() < deadline, f"not settled within {timeout} s: {what}"
        paying = Hold.objects.filter(id__in=ack.payments.values(), state__in=[HoldState.HELD, HoldState.PAYING])
        for hold_id in paying.values_list("id", flat=True):
            headers = {"Authorization": f"Bearer {ack.tokens[hold_id]}"}
            with contextlib.suppress(httpx.TransportError):  # refreshed again on the next turn
                httpx.post(f"{base_url}/api/v1/holds/{hold_id}/pay/check", headers=headers, timeout=5)
        time.sleep(1)


# --- 1. SIGKILL to the web server, the scheduler and a worker ----------------------------------


@dataclass
class Crashing:
    """The web process and two workers (one of them the scheduler, holding the lease)."""

    site: Site
    spare: processes.Service  # the second worker
    log: list[str] = field(default_factory=list)

    def scheduler_and_worker(self) -> tuple[processes.Service, processes.Service]:
        holder = Lease.objects.filter(name="scheduler").values_list("holder", flat=True).first() or ""
        workers = (self.site.worker, self.spare)
        scheduler = next((w for w in workers if w.alive and holder.endswith(f"-{w.pid}")), workers[0])
        return scheduler, workers[1] if scheduler is workers[0] else workers[0]

    def crash_at_random(self, rng: random.Random, started: float) -> None:
        """Kill one (now and then two) of the processes at a random moment of the round, and start
        them again after a random pause."""
        time.sleep(max(0.0, started + rng.uniform(0.1, 1.0) - time.monotonic()))
        try:
            scheduler, worker = self.scheduler_and_worker()
        finally:
            connections.close_all()  # this thread's own connection
        choices = {"web": self.site.web, "scheduler": scheduler, "worker": worker}
        names = rng.sample(sorted(choices), 2 if rng.random() < 0.15 else 1)
        for name in names:
            choices[name].crash()
        self.log.append("+".join(names))
        time.sleep(rng.uniform(0.0, 0.5))
        for name in names:
            choices[name].start(wait=False)


@pytest.fixture
def crashing(tmp_path: Path) -> Iterator[Crashing]:
    db = connection.settings_dict
    url = f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    site = processes.site(database_url=url, logs=tmp_path, keys=Path(settings.PAY_SANDBOX_KEYS), **FAST_TAKEOVER)
    spare = processes.Service("worker-b", site.worker.argv, site.worker.env, tmp_path / "worker-b.log")
    run = Crashing(site, spare)
    try:
        site.start()
        spare.start(wait=False)
        yield run
    finally:
        spare.crash()
        site.stop()


def test_a_patient_page_whose_database_refuses_says_busy_in_chinese_and_asks_it_nothing_more(
    db, client, monkeypatch, django_assert_max_num_queries
):
    """Any database: the page's first query fails. The answer is 503 系统繁忙 and its error page
    asks the database nothing more (each try would wait for the pool's timeout again)."""
    from django.db import OperationalError

    from guahao.web import views

    def refused(_request):
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(views, "current_hospital", refused)
    with django_assert_max_num_queries(0):
        response = client.get("/")
    assert response.status_code == 503
    assert BUSY in response.content.decode()


@crash_test
def test_killed_web_server_scheduler_and_worker_lose_no_acknowledged_hold_or_payment(crashing: Crashing):
    """Rounds run back to back, each with its own crash, so a crash may also fall into the
    settling of the rounds before it; everything is checked once the last round has settled."""
    hospital, doctor = make_hospital_for_run()
    rng = random.Random(SEED)
    ack = Acknowledged()
    site = crashing.site
    run_started = time.monotonic()
    for round_no in range(ROUNDS):
        session = make_session(
            doctor.department, doctor=doctor, slots=PATIENTS_PER_ROUND,
            start=dt.time(8 + round_no % 8, 0), window_minutes=6, fee_fen=rng.choice([500, 2500]),
        )
        patients = make_patients(hospital, PATIENTS_PER_ROUND, rng)
        slots = list(session.slots.order_by("seq").values_list("id", flat=True))
        cancels = [rng.random() < 0.25 for _ in patients]
        started = time.monotonic()
        chaos = threading.Thread(target=crashing.crash_at_random, args=(random.Random(rng.random()), started))
        chaos.start()
        with ThreadPoolExecutor(len(patients)) as pool:
            for done in [
                pool.submit(book, site.base_url, p, s, ack, cancel=c, deadline=started + 20)
                for p, s, c in zip(patients, slots, cancels, strict=True)
            ]:
                done.result()
        chaos.join()
        print(f"round {round_no}: killed {crashing.log[-1]}, {time.monotonic() - started:.1f} s")
    run = f"seed {SEED}, killed in turn: {', '.join(crashing.log)}"
    for service in (site.web, site.worker, crashing.spare):
        assert service.alive, f"{run}: {service.name} did not come back; see {service.log_path}"
    site.web.wait_ready()
    # The workers settle what the crashes interrupted: events a dead worker had claimed are taken
    # over, money paid while nobody listened arrives with 我已支付 or the provider's next notice.
    wait_until_settled(site.base_url, ack, timeout=60, what=run)
    outcomes = [payment_outcome(no) for no in ack.payments]
    print(f"settled after {time.monotonic() - run_started:.1f} s: {len(ack.holds)} holds, {Counter(outcomes)}, {dict(ack.statuses)}, refused: {ack.refusals}")
    assert_nothing_acknowledged_is_lost(ack, seed=run)
    assert ack.statuses[500] == 0, f"{run}: {ack.statuses}"
    assert find_violations() == [], run
    assert len(ack.payments) >= ROUNDS, f"{run}: too few payments to mean anything: {len(ack.payments)}"
    checked = processes.guahao_command(site.web.env, "ledger-check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- 2. the database restarts in the middle of a run --------------------------------------------


@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    reason = PrivateCluster.unavailable()
    if reason:
        pytest.skip(reason)
    cluster = PrivateCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def _answer_while_down(url: str, **kwargs) -> tuple[int, str, float]:
    started = time.monotonic()
    response = httpx.get(url, timeout=10, **kwargs)
    return response.status_code, response.text, time.monotonic() - started


@crash_test
def test_database_restart_answers_503_in_chinese_and_the_service_recovers_by_itself(private_cluster, tmp_path):
    hospital, doctor = make_hospital_for_run()
    rng = random.Random(SEED)
    session = make_session(doctor.department, doctor=doctor, slots=8, window_minutes=6)
    patients = make_patients(hospital, 8, rng)
    slots = list(session.slots.order_by("seq").values_list("id", flat=True))
    db = connection.settings_dict
    private_cluster.copy_database(
        f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}", "guahao"
    )
    url = private_cluster.url("guahao")
    site = processes.site(database_url=url, logs=tmp_path, keys=Path(settings.PAY_SANDBOX_KEYS), **FAST_TAKEOVER)
    ack = Acknowledged()
    t0, phases = time.monotonic(), []
    try:
        site.start()
        phases.append(f"started {time.monotonic() - t0:.1f} s")
        # Before: four patients book and pay.
        with ThreadPoolExecutor(4) as pool:
            for done in [
                pool.submit(book, site.base_url, p, s, ack, cancel=False, deadline=time.monotonic() + 20)
                for p, s in zip(patients[:4], slots[:4], strict=True)
            ]:
                done.result()
        assert len(ack.payments) == 4, ack
        phases.append(f"booked before {time.monotonic() - t0:.1f} s")
        # Two more are in the middle of holding when the database stops.
        during = ThreadPoolExecutor(2)
        in_flight = [
            during.submit(book, site.base_url, p, s, ack, cancel=False, deadline=time.monotonic() + 25)
            for p, s in zip(patients[4:6], slots[4:6], strict=True)
        ]
        private_cluster.stop("fast")
        try:
            auth = {"Authorization": f"Bearer {patients[0].token}"}
            status, body, took = _answer_while_down(f"{site.base_url}/api/v1/holds", headers=auth)
            assert (status, took < 5) == (503, True), (status, body[:300], took)
            assert BUSY in body
            status, body, took = _answer_while_down(f"{site.base_url}/healthz")
            assert (status, took < 5) == (503, True), (status, body[:300], took)
            status, body, took = _answer_while_down(f"{site.base_url}/?hospital={hospital.id}")
            assert (status, took < 5) == (503, True), (status, body[:300], took)
            assert BUSY in body
        finally:
            private_cluster.start()
        phases.append(f"down and up {time.monotonic() - t0:.1f} s")
        # The same web process serves again by itself: every request, not just some.
        wait_for(lambda: processes.answers(f"{site.base_url}/healthz"), timeout=15, what="healthz 200 again")
        phases.append(f"healthz {time.monotonic() - t0:.1f} s")
        auth = {"Authorization": f"Bearer {patients[0].token}"}
        statuses = [httpx.get(f"{site.base_url}/api/v1/holds", headers=auth, timeout=10).status_code for _ in range(25)]
        assert statuses == [200] * 25, statuses
        for done in in_flight:
            done.result()
        during.shutdown()
        phases.append(f"in flight done {time.monotonic() - t0:.1f} s")
        # After: the last two book as usual.
        with ThreadPoolExecutor(2) as pool:
            for done in [
                pool.submit(book, site.base_url, p, s, ack, cancel=False, deadline=time.monotonic() + 20)
                for p, s in zip(patients[6:], slots[6:], strict=True)
            ]:
                done.result()
        phases.append(f"booked after {time.monotonic() - t0:.1f} s")
        assert len(ack.payments) >= 6, ack
        assert ack.statuses[500] == 0, ack.statuses
        assert (site.web.alive, site.web.starts) == (True, 1), "the web process was never restarted"
        wait_for(lambda: _private_settled(url, ack), timeout=60, every=0.3, what="payments settled")
        print(f"{', '.join(phases)}, settled {time.monotonic() - t0:.1f} s: {dict(ack.statuses)}")
        checked = processes.guahao_command(site.web.env, "ledger-check")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        site.stop()


def _private_settled(url: str, ack: Acknowledged) -> bool:
    """Every acknowledged hold is in the private database, and every acknowledged payment bought
    a registration (nothing was cancelled in this run)."""
    with psycopg.connect(url) as conn:
        holds = dict(conn.execute("SELECT id, account_id FROM booking_hold WHERE id = ANY(%s)", [list(ack.holds)]).fetchall())
        assert holds == ack.holds, f"acknowledged holds lost or changed: {ack.holds} vs {holds}"
        rows = conn.execute(
            "SELECT p.out_trade_no, p.state, h.state, r.status FROM payments_payment p "
            "JOIN booking_hold h ON h.id = p.hold_id LEFT JOIN booking_registration r ON r.hold_id = h.id "
            "WHERE p.out_trade_no = ANY(%s)",
            [list(ack.payments)],
        ).fetchall()
    assert len(rows) == len(ack.payments), rows
    return all(row[1:] == ("paid", "succeeded", "booked") for row in rows)

