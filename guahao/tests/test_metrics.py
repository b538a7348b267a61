"""/metrics: what operators watch during a release, readable only from GUAHAO_METRICS_ALLOW."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from guahao.booking.tests.conftest import World, booker, world  # noqa: F401 (fixtures)
from guahao.testing import api_client, make_account

pytestmark = pytest.mark.django_db


def scrape(client: Client | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = (client or Client()).get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_hold_outcomes_latency_and_queues_after_requests(world: World, booker):  # noqa: F811
    account, _patient = booker
    slot = world.session.slots.order_by("seq").first()
    before = scrape()

    granted = api_client(account).post("/api/v1/holds", {"slot_id": slot.id})
    assert granted.status_code == 201
    refused = api_client(make_account()).post("/api/v1/holds", {"slot_id": slot.id})
    assert refused.status_code == 409 and refused.json()["code"] == "slot_taken"
    hold_id = granted.json()["id"]
    assert api_client(account).get(f"/api/v1/holds/{hold_id}").status_code == 200

    after = scrape()
    assert value(after, "guahao_holds_total", outcome="granted") == value(before, "guahao_holds_total", outcome="granted") + 1
    assert value(after, "guahao_holds_total", outcome="slot_taken") == value(before, "guahao_holds_total", outcome="slot_taken") + 1
    # The route is the URL pattern: the hold's id never becomes a label value.
    routes = {dict(labels)["route"] for (name, labels) in after if name == "guahao_http_request_seconds_count"}
    assert f"/api/v1/holds/{hold_id}" not in routes
    detail = [r for r in routes if r.startswith("/api/v1/holds/") and r.count("/") == 4]
    assert detail and all(r.split("/")[-1] != str(hold_id) for r in detail), routes
    key = dict(route="/api/v1/holds", method="POST", status="2xx")
    assert value(after, "guahao_http_request_seconds_count", **key) == value(before, "guahao_http_request_seconds_count", **key) + 1
    # Gauges computed at scrape time.
    for name in ("guahao_outbox_backlog", "guahao_outbox_oldest_age_seconds", "guahao_outbox_parked", "guahao_deliveries_pending"):
        assert (name, ()) in after, name


def test_other_addresses_get_404_as_if_there_were_no_such_page(settings):
    assert Client(REMOTE_ADDR="203.0.113.9").get("/metrics").status_code == 404
    # X-Forwarded-For is believed only from a trusted proxy: claiming 127.0.0.1 does not help.
    spoofed = Client(REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert spoofed.get("/metrics").status_code == 404
    settings.METRICS_ALLOW = ["10.0.0.0/8"]
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 404
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    # Behind a trusted proxy, the client's address decides.
    settings.TRUSTED_PROXIES = ["192.0.2.1"]
    assert Client(REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="10.9.9.9").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="198.51.100.7").get("/metrics").status_code == 404


# One gunicorn worker's share: counts written into the shared directory, then the process ends.
_WORKER = """
import django
django.setup()
from guahao import metrics
metrics.count_hold("granted")
metrics.count_hold("window_full")
metrics.HTTP_REQUEST_SECONDS.labels("/api/v1/holds", "POST", "2xx").observe(0.2)
with metrics.outside_call("his"):
    pass
"""


def test_multiprocess_mode_adds_up_every_worker(tmp_path, monkeypatch):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "guahao.settings"}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", _WORKER], env=env, check=True, timeout=60)
    assert len(list(tmp_path.glob("*.db"))) >= 2  # one file set per process

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    samples = scrape()
    assert value(samples, "guahao_holds_total", outcome="granted") == 2
    assert value(samples, "guahao_holds_total", outcome="window_full") == 2
    assert value(samples, "guahao_http_request_seconds_count", route="/api/v1/holds", method="POST", status="2xx") == 2
    assert value(samples, "guahao_outside_call_seconds_count", system="his", outcome="ok") == 2
    assert ("guahao_outbox_backlog", ()) in samples  # the scrape-time gauges there too


def test_requests_refused_with_429_are_counted_per_route(world: World, settings):  # noqa: F811
    settings.LIMITS = {**settings.LIMITS, "browse_ip": "2/m"}
    settings.REDIS_URL = ""
    path = f"/api/v1/sessions/{world.session.id}/slots"
    before = scrape()
    answers = [Client(REMOTE_ADDR="192.0.2.44").get(path).status_code for _ in range(3)]
    assert answers == [200, 200, 429]
    after = scrape()
    counted = [dict(labels)["route"] for (name, labels) in after if name == "guahao_http_429_total"]
    assert any(r.endswith("/slots") for r in counted), counted
    key = next(r for r in counted if r.endswith("/slots"))
    assert value(after, "guahao_http_429_total", route=key) == value(before, "guahao_http_429_total", route=key) + 1
    assert str(world.session.id) not in key.split("/")  # the pattern, not the session's id
