"""Check-in and visit from the HIS: by polling its query operation and by its signed callback,
each a compare-and-set through the state table with its event, and each safe to repeat."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest
from django.test import Client

from guahao.booking.models import Registration
from guahao.booking.states import RegistrationStatus
from guahao.booking.tests.conftest import ready_to_book, registered
from guahao.catalog.models import Hospital
from guahao.his import services as his_services
from guahao.his import wire
from guahao.his.attendance import refresh_attendance
from guahao.his.models import HisConnection
from guahao.his.simulated import SimulatedHis
from guahao.ledger import find_violations
from guahao.notifications.models import OutboxEvent
from guahao.testing import make_account, make_department, make_doctor, make_hospital, make_session

pytestmark = pytest.mark.django_db

SECRET = "hospital-shared-secret-0001"


@pytest.fixture
def his(monkeypatch) -> SimulatedHis:
    simulated = SimulatedHis()
    monkeypatch.setattr(his_services, "adapter", lambda: simulated)
    monkeypatch.setattr(his_services, "adapter_for", lambda hospital_id: simulated)
    return simulated


@pytest.fixture
def booked(his) -> Registration:
    """A BOOKED registration at a hospital whose HIS holds it too."""
    hospital = make_hospital()
    department = make_department(hospital)
    session = make_session(department, doctor=make_doctor(department, name="李建国"), slots=4)
    account = make_account()
    return registered(account, ready_to_book(account, hospital), session)


def status_of(registration: Registration) -> str:
    return Registration.objects.values_list("status", flat=True).get(id=registration.id)


def topics() -> Counter:
    return Counter(OutboxEvent.objects.values_list("topic", flat=True))


def poll(registration: Registration) -> int:
    return refresh_attendance(hospital=registration.session.hospital, day=registration.session.date)


def test_polling_moves_a_registration_to_checked_in_then_visited_once(his, booked):
    assert poll(booked) == 0 and status_of(booked) == RegistrationStatus.BOOKED
    his.set_attendance(booked.hold_id, "checked_in")
    assert poll(booked) == 1 and status_of(booked) == RegistrationStatus.CHECKED_IN
    assert poll(booked) == 0
    his.set_attendance(booked.hold_id, "visited")
    assert poll(booked) == 1 and status_of(booked) == RegistrationStatus.VISITED
    assert poll(booked) == 0  # a visited registration is no longer asked about
    assert topics()["registration.checked_in"] == 1 and topics()["registration.visited"] == 1
    assert find_violations() == []


def test_a_visit_reported_before_the_check_in_passes_through_checked_in(his, booked):
    his.set_attendance(booked.hold_id, "visited")
    assert poll(booked) == 2 and status_of(booked) == RegistrationStatus.VISITED
    assert topics()["registration.checked_in"] == 1 and topics()["registration.visited"] == 1


def test_an_his_cancel_we_did_not_make_is_left_for_staff_and_logged(his, booked, caplog):
    his.set_attendance(booked.hold_id, "cancelled")
    with caplog.at_level(logging.ERROR, logger="guahao.his.attendance"):
        assert poll(booked) == 0
    assert status_of(booked) == RegistrationStatus.BOOKED
    assert any("left for staff" in r.getMessage() for r in caplog.records)


def test_an_his_that_does_not_answer_ends_the_round_without_a_change(his, booked):
    his.set_attendance(booked.hold_id, "checked_in")
    his.fail_next("query_registration", "timeout")
    assert poll(booked) == 0 and status_of(booked) == RegistrationStatus.BOOKED
    assert poll(booked) == 1


# --- the signed callback ------------------------------------------------------------------------------


def connect(hospital: Hospital) -> None:
    HisConnection.objects.create(
        hospital=hospital, mode=HisConnection.Mode.HIS_LOCK, base_url="http://127.0.0.1:9/guahao/v1",
        hospital_code=hospital.code, secret=SECRET,
    )


def events_path(hospital: Hospital) -> str:
    return f"/api/v1/his/{hospital.code}/events"


def send(path: str, events: list[dict], *, secret: str = SECRET, headers: dict[str, str] | None = None):
    body = json.dumps(events).encode()
    headers = headers or wire.signed_request_headers(secret, hospital="H", method="POST", target=path, body=body)
    response = Client().post(path, body, content_type="application/json", headers=headers)
    return response, headers


def event(registration: Registration, status: str) -> dict:
    return {
        "hold_id": registration.hold_id, "registration_no": registration.registration_no,
        "status": status, "at": "2026-01-01T08:05:00+08:00",
    }


def test_the_signed_callback_records_check_in_and_visit_and_repeats_change_nothing(booked):
    hospital = booked.session.hospital
    connect(hospital)
    path = events_path(hospital)
    response, _ = send(path, [event(booked, "checked_in")])
    assert response.status_code == 200 and response.json() == {"received": 1, "moved": 1, "unknown": []}
    assert status_of(booked) == RegistrationStatus.CHECKED_IN
    response, _ = send(path, [event(booked, "checked_in"), event(booked, "visited"), {**event(booked, "visited"), "hold_id": 999999}])
    assert response.json() == {"received": 3, "moved": 1, "unknown": [999999]}
    response, _ = send(path, [event(booked, "visited")])  # the HIS sends it again (new nonce)
    assert response.status_code == 200 and response.json()["moved"] == 0
    assert status_of(booked) == RegistrationStatus.VISITED
    assert topics()["registration.checked_in"] == 1 and topics()["registration.visited"] == 1


def test_a_callback_with_a_bad_signature_or_a_replayed_nonce_is_refused(booked):
    hospital = booked.session.hospital
    connect(hospital)
    path = events_path(hospital)
    forged, _ = send(path, [event(booked, "checked_in")], secret="not-the-secret")
    assert forged.status_code == 401 and forged.json()["code"] == wire.Code.BAD_SIGNATURE
    assert status_of(booked) == RegistrationStatus.BOOKED

    first, headers = send(path, [event(booked, "checked_in")])
    assert first.status_code == 200
    replayed, _ = send(path, [event(booked, "checked_in")], headers=headers)
    assert replayed.status_code == 401 and replayed.json()["code"] == wire.Code.BAD_SIGNATURE

    body = json.dumps([event(booked, "visited")]).encode()
    headers = wire.signed_request_headers(SECRET, hospital="H", method="POST", target=path, body=body)
    tampered = Client().post(path, body.replace(b"visited", b"checked_in"), content_type="application/json", headers=headers)
    assert tampered.status_code == 401
    assert status_of(booked) == RegistrationStatus.CHECKED_IN


def test_a_callback_for_a_hospital_without_an_his_connection_is_refused(booked):
    response, _ = send(events_path(booked.session.hospital), [event(booked, "checked_in")])
    assert response.status_code == 401 and response.json()["code"] == "his_not_connected"
    assert status_of(booked) == RegistrationStatus.BOOKED


def test_a_malformed_callback_body_is_a_bad_request(booked):
    hospital = booked.session.hospital
    connect(hospital)
    response, _ = send(events_path(hospital), [{"hold_id": "x", "status": "visited"}])
    assert response.status_code == 400 and response.json()["code"] == wire.Code.BAD_REQUEST
