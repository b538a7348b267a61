from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from guahao.console.testing import superuser_client
from guahao.scheduling.models import Session
from guahao.testing import make_session

from .conftest import day


@pytest.fixture
def operator(db) -> Client:
    return superuser_client()


def test_scheduling_console_pages_open_and_suspend(operator, world):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(1))
    for model in ("registrationtype", "releaserule", "session", "slot"):
        assert operator.get(reverse(f"admin:scheduling_{model}_changelist")).status_code == 200, model
    listing = operator.get(reverse("admin:scheduling_session_changelist")).content.decode()
    assert "4/4" in listing  # free/total numbers
    assert operator.get(reverse("admin:scheduling_session_change", args=[session.id])).status_code == 200

    changelist = reverse("admin:scheduling_session_changelist")
    asked = operator.post(changelist, {"action": "suspend", "_selected_action": [session.id]})
    assert asked.status_code == 200 and "停诊原因" in asked.content.decode()  # a reason first
    session.refresh_from_db()
    assert session.status == Session.Status.OPEN

    response = operator.post(
        changelist, {"action": "suspend", "_selected_action": [session.id], "apply": "1", "reason": "医生外出会诊"}
    )
    assert response.status_code == 302
    session.refresh_from_db()
    assert session.status == Session.Status.SUSPENDED
    assert session.suspend_reason == "医生外出会诊"
