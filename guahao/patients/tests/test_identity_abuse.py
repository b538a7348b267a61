"""No one learns or uses another person's identity through the visiting-patient flow.

The attack these tests close: knowing a stranger's ID number, an account tried names until the
answer for an ID already on file (compared with the name another account had entered) differed
from the real-name service's, then linked the stranger with no check and saw the phone another
account had entered. Now every add goes to the real-name service and answers the same way, in the
same time, whether or not anyone has the ID; tries are limited per account and per address and
recorded for staff; and a record holds only what its own account typed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import statistics
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from guahao import clock, pii
from guahao.errors import Conflict, InvalidInput, RateLimited, UpstreamUnavailable
from guahao.patients import selectors, services
from guahao.patients.models import Patient, PatientAddAttempt
from guahao.patients.realname import sandbox
from guahao.testing import api_client, make_account, make_id_number, make_patient

pytestmark = pytest.mark.django_db

# Two identities the sandbox real-name service has on file: 李四's (which another account of ours
# has too) and 王五's (which nobody here has). A wrong name is wrong for both.
ON_FILE_WITH_US, LISI = next((n, name) for n, name in sandbox.ON_FILE.items() if name == "李四")
NOT_ON_FILE_WITH_US = next(n for n, name in sandbox.ON_FILE.items() if name == "王五")
WRONG_NAME = "李五"


def _body(*, name: str, id_number: str, phone: str = "13700001111", relation: str = "other") -> dict:
    return {
        "name": name,
        "id_type": "resident",
        "id_number": id_number,
        "phone": phone,
        "relation": relation,
    }


def _on_file_under_another_account() -> Patient:
    return make_patient(make_account(), name=LISI, id_number=ON_FILE_WITH_US, relation="parent")


def _add(account, *, name: str, id_number: str, client_ip: str = "10.0.0.1", **fields) -> Patient:
    return services.add_patient(
        account=account,
        name=name,
        id_type="resident",
        id_number=id_number,
        phone=fields.get("phone", "13700001111"),
        relation=fields.get("relation", "other"),
        client_ip=client_ip,
    )


class CountingVerifier:
    """The sandbox verifier, counting its calls (and taking `latency` seconds to answer)."""

    def __init__(self, latency: float = 0.0) -> None:
        self.calls: list[str] = []
        self.latency = latency
        self.inner = sandbox.SandboxRealnameVerifier()

    def verify(self, *, name: str, id_type: str, id_number: str) -> None:
        self.calls.append(id_number)
        if self.latency:
            time.sleep(self.latency)
        self.inner.verify(name=name, id_type=id_type, id_number=id_number)


@pytest.fixture
def verifier(monkeypatch: pytest.MonkeyPatch) -> CountingVerifier:
    from guahao.patients import realname

    counting = CountingVerifier()
    monkeypatch.setattr(realname, "verifier", lambda: counting)
    return counting


# --- the name oracle is gone ------------------------------------------------------------------


def test_a_wrong_name_gets_the_same_answer_whether_or_not_the_id_is_on_file() -> None:
    _on_file_under_another_account()
    attacker = api_client(make_account())
    attacker.client.defaults["REMOTE_ADDR"] = "203.0.113.7"

    known = attacker.post("/api/v1/patients", _body(name=WRONG_NAME, id_number=ON_FILE_WITH_US))
    unknown = attacker.post("/api/v1/patients", _body(name=WRONG_NAME, id_number=NOT_ON_FILE_WITH_US))

    assert known.status_code == unknown.status_code == 400
    assert known.content == unknown.content
    assert known.json() == {
        "code": "realname_rejected",
        "message": "实名核验未通过：姓名与证件号码不一致",
    }
    assert known.headers["Content-Type"] == unknown.headers["Content-Type"]


def test_both_cases_do_the_same_work_verifier_included(verifier) -> None:
    _on_file_under_another_account()
    attacker = make_account()

    def queries_of(id_number: str) -> list[str]:
        with CaptureQueriesContext(connection) as captured, pytest.raises(InvalidInput):
            _add(attacker, name=WRONG_NAME, id_number=id_number)
        return [q["sql"] for q in captured.captured_queries]

    known = queries_of(ON_FILE_WITH_US)
    unknown = queries_of(NOT_ON_FILE_WITH_US)

    assert [_shape(q) for q in known] == [_shape(q) for q in unknown]
    assert verifier.calls == [ON_FILE_WITH_US, NOT_ON_FILE_WITH_US]  # the service asked both times
    # Visiting-patient records are read only within the attacker's own account.
    reads = [q for q in known if '"patients_patient"' in q]
    assert reads and all(f'"account_id" = {attacker.pk}' in q for q in reads)


def _shape(sql: str) -> str:
    """A statement without its values (the two IDs' indexes differ) or savepoint names."""
    sql = re.sub(r'"s\d+_x\d+"', "SP", sql)
    sql = re.sub(r"'(?:[^']|'')*'", "?", sql)
    return re.sub(r"\b\d+(?:\.\d+)?\b", "?", sql)


def test_a_wrong_name_takes_the_same_time_whether_or_not_the_id_is_on_file(settings, monkeypatch) -> None:
    # Same limits work (counters are written either way), but room for the many runs measured.
    settings.LIMITS = settings.LIMITS | {"patient_add_account": "10000/h", "patient_add_ip": "10000/h"}
    # A real service answers in milliseconds: with that latency a skipped (or extra) call would
    # show as a steady gap instead of hiding in the noise of a sandbox that answers at once.
    from guahao.patients import realname

    slow = CountingVerifier(latency=0.005)
    monkeypatch.setattr(realname, "verifier", lambda: slow)
    _on_file_under_another_account()
    attacker = make_account()

    def timed(id_number: str) -> float:
        started = time.perf_counter()
        with pytest.raises(InvalidInput):
            _add(attacker, name=WRONG_NAME, id_number=id_number)
        return time.perf_counter() - started

    for _ in range(5):  # warm caches and connections before measuring
        timed(ON_FILE_WITH_US)
        timed(NOT_ON_FILE_WITH_US)
    known: list[float] = []
    unknown: list[float] = []
    for i in range(60):  # interleaved, alternating who goes first, so drift hits both alike
        pair = [(known, ON_FILE_WITH_US), (unknown, NOT_ON_FILE_WITH_US)]
        for samples, number in pair if i % 2 else reversed(pair):
            samples.append(timed(number))

    a, b = statistics.median(known), statistics.median(unknown)
    # Generous, so a busy machine does not make it flaky, yet under the 5 ms a skipped call saves.
    assert abs(a - b) <= 0.3 * max(a, b) + 0.001, (a, b)
    assert len(slow.calls) == 130


def test_the_sixth_try_in_an_hour_is_cut_off_with_429(verifier) -> None:
    _on_file_under_another_account()
    attacker = api_client(make_account())
    attacker.client.defaults["REMOTE_ADDR"] = "203.0.113.7"
    guesses = ["李一", "李二", "李三", "李五", "李六"]

    answers = [attacker.post("/api/v1/patients", _body(name=g, id_number=ON_FILE_WITH_US)) for g in guesses]
    sixth = attacker.post("/api/v1/patients", _body(name=LISI, id_number=ON_FILE_WITH_US))

    assert [a.status_code for a in answers] == [400] * 5
    assert sixth.status_code == 429
    assert sixth.json()["code"] == "rate_limited"
    assert sixth.json()["message"].startswith("添加就诊人过于频繁")
    assert 0 < sixth.json()["retry_after"] <= 3600
    assert sixth["Retry-After"] == str(sixth.json()["retry_after"])
    assert len(verifier.calls) == 5  # the right name, sixth, never reached the service
    with clock.travel(dt.timedelta(hours=1)):
        later = attacker.post("/api/v1/patients", _body(name=LISI, id_number=ON_FILE_WITH_US))
    assert later.status_code == 201


def test_ten_tries_a_day_even_spread_over_hours() -> None:
    # From 01:00 UTC, so the six hours stay inside one fixed day window whenever the suite runs.
    morning = clock.now().replace(hour=1, minute=0, second=0, microsecond=0)
    account = make_account()
    with clock.frozen_at(morning):
        for hour in range(5):
            with clock.travel(dt.timedelta(hours=hour)):
                for _ in range(2):
                    with pytest.raises(InvalidInput):
                        _add(account, name=WRONG_NAME, id_number=NOT_ON_FILE_WITH_US)

        with clock.travel(dt.timedelta(hours=5)), pytest.raises(RateLimited):
            _add(account, name="王五", id_number=NOT_ON_FILE_WITH_US)


def test_one_address_is_limited_across_accounts() -> None:
    for _ in range(5):
        with pytest.raises(InvalidInput):
            _add(make_account(), name=WRONG_NAME, id_number=NOT_ON_FILE_WITH_US, client_ip="198.51.100.4")

    with pytest.raises(RateLimited):
        _add(make_account(), name="王五", id_number=NOT_ON_FILE_WITH_US, client_ip="198.51.100.4")
    # Another address is not held back by that one.
    assert _add(make_account(), name="王五", id_number=NOT_ON_FILE_WITH_US, client_ip="198.51.100.5")


# --- another account's entries are never shown or copied --------------------------------------


def test_adding_a_person_another_account_has_shows_only_this_accounts_entries() -> None:
    number = make_id_number()
    theirs = make_patient(make_account(), name="John Smith", id_number=number, relation="parent", phone="13911112222")
    account = make_account()
    me = api_client(account)

    added = me.post("/api/v1/patients", _body(name="JOHN SMITH", id_number=number, phone="13833334444", relation="child"))
    listing = me.get("/api/v1/patients")

    assert added.status_code == 201
    body = added.json()
    assert (body["name"], body["phone"], body["relation"]) == ("J********H", "138****4444", "child")
    assert body["id_number"] == number[0] + "*" * 16 + number[-1]
    assert set(body) == {"id", "name", "id_type", "id_number", "phone", "sex", "age", "relation"}
    assert listing.json() == [added.json()]
    for page in (added.content.decode(), listing.content.decode()):
        assert "139****2222" not in page and "13911112222" not in page
        assert "J********h" not in page  # the other account's spelling
        assert "parent" not in page
        assert str(theirs.birth_date) not in page  # the age is enough
    mine = Patient.objects.get(pk=added.json()["id"])
    assert mine.pk != theirs.pk
    assert (mine.account, mine.name, mine.phone, mine.relation) == (account, "JOHN SMITH", "13833334444", "child")
    theirs.refresh_from_db()
    assert (theirs.name, theirs.phone, theirs.relation) == ("John Smith", "13911112222", "parent")


def test_another_accounts_record_is_answered_like_a_missing_one_over_http() -> None:
    theirs = make_patient(make_account(), name="张三丰")
    me = api_client(make_account())

    assert me.get("/api/v1/patients").json() == []
    answers = [me.delete(f"/api/v1/patients/{pk}") for pk in (theirs.pk, theirs.pk + 1000)]
    assert answers[0].status_code == answers[1].status_code == 404
    assert answers[0].content == answers[1].content


# --- every try is recorded for staff ----------------------------------------------------------


def test_every_attempt_is_recorded_with_its_outcome() -> None:
    account = make_account()
    number = make_id_number()

    outcomes = []
    for name, id_number, relation in [
        ("赵六", number, "self"),  # added
        ("赵六", number, "other"),  # already in the list
        ("赵六测试不符", make_id_number(), "other"),  # the real-name service says no
        ("赵", make_id_number(), "other"),  # not a name
    ]:
        with contextlib.suppress(InvalidInput, Conflict):  # the refusal is not what is checked here
            _add(account, name=name, id_number=id_number, relation=relation, client_ip="192.0.2.8")
        outcomes.append(PatientAddAttempt.objects.order_by("-id").first().outcome)
    with sandbox.outage(), pytest.raises(UpstreamUnavailable):
        _add(account, name="钱七", id_number=make_id_number(), client_ip="192.0.2.8")
    with pytest.raises(RateLimited):
        _add(account, name="钱七", id_number=make_id_number(), client_ip="192.0.2.8")

    attempts = list(PatientAddAttempt.objects.filter(account=account).order_by("id"))
    assert outcomes == ["added", "exists", "realname_rejected", "invalid"]
    assert [a.outcome for a in attempts] == [*outcomes, "unavailable", "rate_limited"]
    assert {a.client_ip for a in attempts} == {"192.0.2.8"}
    assert attempts[0].patient == selectors.patients_of(account).get()
    assert attempts[0].id_index == attempts[1].id_index == pii.blind_index(f"resident:{number}", purpose="id")
    assert all(a.id_index and number not in a.id_index for a in attempts)


def test_a_refused_attempt_is_recorded_even_though_nothing_else_is_kept() -> None:
    account = make_account()

    with pytest.raises(InvalidInput):
        _add(account, name=WRONG_NAME, id_number=ON_FILE_WITH_US)

    assert not Patient.objects.filter(account=account).exists()
    (attempt,) = PatientAddAttempt.objects.filter(account=account)
    assert attempt.outcome == "realname_rejected"
    assert attempt.patient is None
