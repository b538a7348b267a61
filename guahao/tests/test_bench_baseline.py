"""/bench/json exists only for bench/browse.py: a deployed server answers it as an unknown page."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db


def test_baseline_is_not_there_by_default() -> None:
    assert Client().get("/bench/json").status_code == 404


@override_settings(BENCH_BASELINE=True)
def test_baseline_answers_small_json_when_switched_on() -> None:
    response = Client().get("/bench/json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"ok": True, "service": "guahao"}
