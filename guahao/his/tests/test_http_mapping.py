"""The HTTP adapter against a tiny signed gateway of the test's own: every request is signed the way
the contract says, and each kind of answer maps onto the port (result, HisRefused, HisTimeout)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from guahao.his.adapters.http import HttpHis
from guahao.his.base import CardRequest, HisRefused, HisTimeout, LockRequest, RegisterRequest

from .gateway import HOSPITAL, SECRET, Answer, Gateway


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    g = Gateway(prefix="/guahao/v1")
    yield g
    g.close()


def client(gateway: Gateway, **kwargs: object) -> HttpHis:
    options = {"base_url": gateway.url, "hospital_code": HOSPITAL, "secret": SECRET, "connect_timeout": 1.0, "read_timeout": 1.0}
    return HttpHis(**{**options, **kwargs})  # type: ignore[arg-type]


def lock_request(hold_id: int = 7) -> LockRequest:
    return LockRequest(
        hold_id=hold_id,
        session_code="S1",
        slot_code="S1-01",
        slot_seq=1,
        expires_at=dt.datetime(2030, 1, 1, 8, 10, tzinfo=dt.UTC),
    )


def register_request(*, lock_id: str = "L7") -> RegisterRequest:
    return RegisterRequest(
        hold_id=7,
        his_lock_id=lock_id,
        session_code="S1",
        slot_code="S1-01",
        slot_seq=1,
        patient_name="张三丰",
        id_type="resident_id",
        id_number="110101199003070019",
        fee_fen=2500,
        insurance=True,
        out_trade_no="GH0001",
    )


# --- requests are signed over exactly what is sent -------------------------------------------------


def test_a_lock_is_a_signed_post_under_the_base_urls_own_path(gateway):
    gateway.answer = lambda seen: Answer(body={"lock_id": "L7", "expires_at": "2030-01-01T08:10:00+00:00"})
    assert client(gateway).lock_slot(lock_request()) == "L7"
    [seen] = gateway.seen
    assert (seen.method, seen.target, seen.signature_ok, seen.hospital) == ("POST", "/guahao/v1/locks", True, HOSPITAL)
    assert json.loads(seen.body) == {
        "hold_id": 7, "session_code": "S1", "slot_code": "S1-01", "slot_seq": 1, "expires_at": "2030-01-01T08:10:00+00:00"
    }


def test_the_query_string_is_part_of_what_is_signed(gateway):
    gateway.answer = lambda seen: Answer(body={"cursor": "42", "departments": [], "doctors": [], "sessions": []})
    assert client(gateway).fetch_schedule(since="41", days=3).cursor == "42"
    [seen] = gateway.seen
    assert seen.target == "/guahao/v1/schedule?since=41&days=3" and seen.signature_ok


def test_register_sends_the_payment_reference_and_the_insurance_split(gateway):
    gateway.answer = lambda seen: Answer(body={"hold_id": 7, "registration_no": "R1", "status": "booked"})
    assert client(gateway).register(register_request()).registration_no == "R1"
    sent = json.loads(gateway.seen[0].body)
    assert sent["out_trade_no"] == "GH0001" and sent["lock_id"] == "L7"
    assert (sent["fee_fen"], sent["insurance_fen"], sent["self_pay_fen"]) == (2500, 2500, 0)
    assert sent["patient"] == {"name": "张三丰", "id_type": "resident_id", "id_number": "110101199003070019"}


# --- answers → the port ----------------------------------------------------------------------------


def test_a_contract_refusal_is_his_refused_with_its_code(gateway):
    gateway.answer = lambda seen: Answer(status=409, body={"code": "SLOT_TAKEN", "message": "taken"})
    with pytest.raises(HisRefused) as caught:
        client(gateway).lock_slot(lock_request())
    assert caught.value.reason == "SLOT_TAKEN"


@pytest.mark.parametrize(
    "answer",
    [
        Answer(status=500, body={"code": "SLOT_TAKEN"}),  # 5xx is never a refusal
        Answer(status=502, body=b"<html>bad gateway</html>"),
        Answer(status=404, body=b"not found"),  # a 4xx without a contract code
        Answer(status=409, body={"code": "SOMETHING_ELSE"}),
        Answer(status=302, body=b"", headers={"Location": "http://127.0.0.1:1/"}),  # never followed
        Answer(status=200, body=b"not json"),
        Answer(status=200, body={"lock": "no lock_id"}),
        Answer(status=200, body={"lock_id": "L7"}, sign=False),  # unsigned: not the gateway speaking
        Answer(status=200, body={"lock_id": "L7"}, secret="another-secret-entirely"),
        Answer(status=409, body={"code": "SLOT_TAKEN"}, sign=False),  # an unsigned refusal is no answer
    ],
    ids=["500", "502-html", "404-no-code", "409-unknown-code", "302", "not-json", "wrong-shape", "unsigned",
         "wrong-secret", "unsigned-refusal"],
)
def test_every_other_answer_is_an_unknown_outcome(gateway, answer):
    gateway.answer = lambda seen: answer
    with pytest.raises(HisTimeout):
        client(gateway).lock_slot(lock_request())
    assert len(gateway.seen) == 1  # and never repeated


def test_401_is_a_refused_signature_logged_as_a_configuration_error(gateway, caplog):
    gateway.answer = lambda seen: Answer(status=401, body={"code": "BAD_SIGNATURE", "message": "no"}, sign=False)
    with caplog.at_level(logging.ERROR, logger="guahao.his"), pytest.raises(HisRefused) as caught:
        client(gateway, secret="not-the-gateways-secret").lock_slot(lock_request())
    assert caught.value.reason == "BAD_SIGNATURE"
    assert not gateway.seen[0].signature_ok
    assert any(r.levelno == logging.ERROR and "signature" in r.getMessage() for r in caplog.records)


def test_no_answer_in_time_is_a_timeout_and_is_not_retried(gateway):
    gateway.answer = lambda seen: Answer(body={"lock_id": "L7"}, delay=1.0)
    started = time.monotonic()
    with pytest.raises(HisTimeout):
        client(gateway, read_timeout=0.2).lock_slot(lock_request())
    assert time.monotonic() - started < 0.9
    assert len(gateway.seen) == 1


def test_a_refused_connection_is_a_timeout():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    his = HttpHis(base_url=f"http://127.0.0.1:{port}", hospital_code=HOSPITAL, secret=SECRET)
    with pytest.raises(HisTimeout):
        his.query_registration(hold_id=7)


def test_query_of_an_unknown_hold_is_none_and_a_known_one_its_record(gateway):
    gateway.answer = lambda seen: Answer(status=404, body={"code": "NOT_FOUND", "message": "none"})
    assert client(gateway).query_registration(hold_id=7) is None
    gateway.answer = lambda seen: Answer(body={"hold_id": 7, "registration_no": "R1", "status": "checked_in", "visit_seq": 3})
    record = client(gateway).query_registration(hold_id=7)
    assert (record.registration_no, record.status, record.visit_seq, record.active) == ("R1", "checked_in", 3, True)


def test_releasing_or_cancelling_what_the_his_does_not_know_is_not_an_error(gateway):
    gateway.answer = lambda seen: Answer(body={"released": False})
    client(gateway).release_slot(hold_id=7, his_lock_id="", slot_code="S1-01")
    gateway.answer = lambda seen: Answer(status=404, body={"code": "LOCK_NOT_FOUND", "message": "none"})
    client(gateway).release_slot(hold_id=7, his_lock_id="", slot_code="S1-01")
    gateway.answer = lambda seen: Answer(status=404, body={"code": "NOT_FOUND", "message": "none"})
    client(gateway).cancel_registration(hold_id=7)
    gateway.answer = lambda seen: Answer(status=409, body={"code": "ALREADY_VISITED", "message": "seen"})
    with pytest.raises(HisRefused):
        client(gateway).cancel_registration(hold_id=7, registration_no="R1")


def test_a_gateway_without_locks_is_never_asked_to_lock_or_release(gateway):
    gateway.answer = lambda seen: Answer(body={"hold_id": 7, "registration_no": "R1", "status": "booked"})
    his = client(gateway, has_lock_api=False)
    assert his.lock_slot(lock_request()) == ""
    his.release_slot(hold_id=7, his_lock_id="", slot_code="S1-01")
    assert gateway.seen == []
    his.register(register_request(lock_id=""))
    [seen] = gateway.seen
    assert seen.target == "/guahao/v1/registrations" and json.loads(seen.body)["lock_id"] == ""


def test_the_schedule_is_parsed_into_the_ports_batch(gateway):
    schedule = {
        "cursor": "c2",
        "departments": [{"code": "D1", "name": "内科", "parent_code": None}],
        "doctors": [{"code": "DR1", "name": "李建国", "department_code": "D1", "title": "主任医师"}],
        "sessions": [
            {
                "code": "S1", "department_code": "D1", "doctor_code": "DR1", "registration_type": "专家号",
                "date": "2030-01-02", "period": "morning", "start": "2030-01-02T08:00:00+08:00",
                "end": "2030-01-02T12:00:00+08:00", "fee_fen": 5000, "status": "suspended", "suspend_reason": "会诊",
                "slots": [{"code": "S1-01", "seq": 1, "start": "2030-01-02T08:00:00+08:00",
                           "end": "2030-01-02T08:30:00+08:00", "state": "free"}],
            }
        ],
    }
    gateway.answer = lambda seen: Answer(body=schedule)
    batch = client(gateway).fetch_schedule()
    [session] = batch.sessions
    assert batch.cursor == "c2" and batch.departments[0].parent_code is None and batch.doctors[0].title == "主任医师"
    assert (session.status, session.suspend_reason, session.fee_fen, session.date) == ("suspended", "会诊", 5000, dt.date(2030, 1, 2))
    assert session.slots[0].start == dt.datetime(2030, 1, 2, 0, 0, tzinfo=dt.UTC)
    gateway.answer = lambda seen: Answer(body={**schedule, "sessions": [{"code": "S1"}]})
    with pytest.raises(HisTimeout):
        client(gateway).fetch_schedule()


def test_cards_and_the_days_registrations(gateway):
    gateway.answer = lambda seen: Answer(body={"card_no": "C0001", "created": True})
    assert client(gateway).find_or_create_card(CardRequest(name="张三丰", id_type="resident_id", id_number="110101199003070019")) == "C0001"
    gateway.answer = lambda seen: Answer(
        body={"date": "2030-01-02", "registrations": [{"hold_id": 7, "registration_no": "R1", "status": "visited"}]}
    )
    [record] = client(gateway).registrations_of_day(dt.date(2030, 1, 2))
    assert (record.hold_id, record.status) == (7, "visited")
    assert gateway.seen[-1].target == "/guahao/v1/registrations/day?date=2030-01-02"


def test_no_log_line_names_the_patient(gateway, caplog):
    gateway.answer = lambda seen: Answer(status=422, body={"code": "PATIENT_REJECTED", "message": "张三丰 110101199003070019"})
    with caplog.at_level(logging.DEBUG), pytest.raises(HisRefused):
        client(gateway).register(register_request())
    gateway.answer = lambda seen: Answer(status=500, body={"message": "张三丰"})
    with caplog.at_level(logging.DEBUG), pytest.raises(HisTimeout):
        client(gateway).register(register_request())
    text = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "张三丰" not in text and "110101199003070019" not in text
