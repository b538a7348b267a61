"""Real `guahao worker` processes on one PostgreSQL database: two of them drain 1,000 events and no
event reaches a channel twice; killing the scheduler's process hands the lease to the other within
the lease time, and no scheduled job moment runs twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from guahao.notifications import services as outbox
from guahao.notifications.models import Delivery, JobRun, Lease, OutboxEvent
from guahao.notifications.tests.conftest import registered
from guahao.notifications.tests.recording import FileChannel

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        GUAHAO_ENV="development",
        GUAHAO_DATABASE_URL=f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        GUAHAO_MESSAGE_CHANNELS=FileChannel.name,
        GUAHAO_TEST_CHANNEL_FILE=str(tmp_path / "sent.txt"),
        GUAHAO_SCHEDULER_JOBS="",
        DJANGO_SETTINGS_MODULE="guahao.settings",
    )
    env.update(extra)
    return env


def _start(tmp_path: Path, name: str, **extra: str) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "guahao.cli", "worker"], env=_env(tmp_path, **extra), stdout=log, stderr=log
    )


def _stop(*workers: subprocess.Popen) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)


def _wait_for(check, *, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


def test_two_workers_drain_1000_events_and_each_reaches_its_channel_once(world, booker, tmp_path, settings):
    settings.MESSAGE_CHANNELS = []  # the booking itself: the in-app list only
    reg = registered(*booker, world.session)
    for _ in range(1000):
        outbox.emit("registration.booked", registration_id=reg.id)
    workers = [_start(tmp_path, "a"), _start(tmp_path, "b")]
    try:
        _wait_for(
            lambda: not OutboxEvent.objects.filter(processed_at__isnull=True).exists()
            and Delivery.objects.filter(state=Delivery.State.SENT).count() == 1000,
            timeout=120,
        )
    finally:
        _stop(*workers)
    lines = (tmp_path / "sent.txt").read_text().splitlines()
    sent = Counter(line.split()[0] for line in lines)
    assert len(lines) == 1000 and max(sent.values()) == 1
    assert set(sent) == {str(i) for i in Delivery.objects.values_list("id", flat=True)}
    assert Delivery.objects.values("event").distinct().count() == 1000
    assert len({line.split()[2] for line in lines}) == 2  # both processes sent


def _job_runs(tmp_path: Path) -> Counter:
    done = Counter()
    for name in ("a", "b"):
        for line in (tmp_path / f"{name}.log").read_text(errors="replace").splitlines():
            if line.startswith("{") and '"scheduled job done"' in line:
                done[json.loads(line)["key"]] += 1
    return done


def test_killing_the_scheduler_hands_the_lease_over_within_its_time_and_runs_no_job_twice(tmp_path):
    lease_seconds = 3
    extra = {"GUAHAO_SCHEDULER_LEASE_SECONDS": str(lease_seconds), "GUAHAO_SCHEDULER_JOBS": "reminders,housekeeping"}
    first = _start(tmp_path, "a", **extra)
    second = None
    try:
        holder = _wait_for(lambda: Lease.objects.filter(name="scheduler").values_list("holder", flat=True).first(), timeout=60)
        assert holder.endswith(f"-{first.pid}")
        _wait_for(lambda: JobRun.objects.filter(finished_at__isnull=False).count() == 2, timeout=30)
        second = _start(tmp_path, "b", **extra)
        time.sleep(lease_seconds + 1)
        assert Lease.objects.get(name="scheduler").holder == holder  # renewed: no takeover while alive
        first.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait(timeout=10)
        _wait_for(lambda: Lease.objects.get(name="scheduler").holder.endswith(f"-{second.pid}"), timeout=lease_seconds + 5)
        took_over = time.monotonic() - killed_at
        assert took_over <= lease_seconds + 2, took_over
        # Let the new scheduler work a little (a minute boundary may pass: new moments, run once).
        time.sleep(2)
    finally:
        _stop(first, *([second] if second else []))
    runs = _job_runs(tmp_path)
    assert runs and max(runs.values()) == 1, runs
    assert set(runs) == set(JobRun.objects.filter(finished_at__isnull=False).values_list("key", flat=True))
    assert OutboxEvent.objects.filter(topic="job.run").count() == JobRun.objects.count()
