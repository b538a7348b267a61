from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.testing import api_client, make_session

from .conftest import day


def test_department_availability_over_http(world, ten_am):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1), fee_fen=5000)
    response = api_client().get(f"/api/v1/departments/{world.cardiology.id}/availability", days=3)
    assert response.status_code == 200
    body = response.json()
    assert body["department"] == {"id": world.cardiology.id, "name": "心血管内科"}
    assert [d["date"] for d in body["days"]] == [day(i).isoformat() for i in range(3)]
    shown = body["days"][1]["sessions"][0]
    assert shown["id"] == session.id
    assert shown["starts_at"] == f"{day(1).isoformat()}T08:00:00+08:00"
    assert (shown["period"], shown["period_label"]) == ("morning", "上午")
    assert shown["doctor"] == {"id": world.doctor.id, "name": "陈建国", "title": "chief", "title_label": "主任医师"}
    assert (shown["status"], shown["status_label"], shown["remaining"], shown["fee_fen"]) == ("available", "有号", 4, 5000)
    assert body["days"][1]["has_slots"] is True


def test_doctor_availability_and_session_slots_over_http(world, ten_am):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(9))
    client = api_client()
    body = client.get(f"/api/v1/doctors/{world.doctor.id}/availability", days=14).json()
    assert body["doctor"]["department"]["name"] == "心血管内科"
    shown = body["days"][9]["sessions"][0]
    assert shown["status"] == "not_released"
    assert shown["release_at"] == clock.at_local(day(2), dt.time(7, 0)).isoformat()

    slots = client.get(f"/api/v1/sessions/{session.id}/slots").json()
    assert slots["session"]["id"] == session.id
    assert slots["windows"][0] == {
        "window_start": f"{day(9).isoformat()}T08:00:00+08:00",
        "window_end": f"{day(9).isoformat()}T08:30:00+08:00",
        "total": 1,
        "free": 1,
        "slot_id": None,
        "closed": False,
    }


@pytest.mark.parametrize("days", [0, 15, "x"])
def test_days_out_of_range_is_422(world, days):
    response = api_client().get(f"/api/v1/departments/{world.cardiology.id}/availability", days=days)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/departments/999999/availability",
        "/api/v1/doctors/999999/availability",
        "/api/v1/sessions/999999/slots",
    ],
)
def test_unknown_ids_are_404_with_code_and_message(db, path):
    response = api_client().get(path)
    assert response.status_code == 404
    body = response.json()
    assert body["code"].endswith("not_found")
    assert body["message"]


def test_inactive_doctor_and_department_are_404(world):
    session = make_session(world.cardiology, doctor=world.doctor)
    world.doctor.is_active = False
    world.doctor.save()
    client = api_client()
    assert client.get(f"/api/v1/doctors/{world.doctor.id}/availability").status_code == 404
    assert client.get(f"/api/v1/sessions/{session.id}/slots").status_code == 404
    world.cardiology.is_active = False
    world.cardiology.save()
    assert client.get(f"/api/v1/departments/{world.cardiology.id}/availability").status_code == 404
