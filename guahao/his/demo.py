"""A second demo hospital whose numbers live in the HIS simulator (development only): guahao holds
nothing of its own for it, it syncs the simulator's schedule, locks and registers there."""

from __future__ import annotations

import datetime as dt
import time
import urllib.request

from django.db import transaction

from guahao.catalog.models import Hospital, Notice
from guahao.his.models import HisConnection
from guahao.his.sync import SyncReport, sync_schedule
from guahao.scheduling.models import ReleaseRule

CODE = "HISDEMO"
SECRET = "demo-his-secret"


@transaction.atomic
def connect_demo_hospital(*, base_url: str, secret: str = SECRET) -> Hospital:
    """The HIS demo hospital, made once, with its connection pointed at `base_url` (HIS 锁号)."""
    hospital, created = Hospital.objects.get_or_create(
        code=CODE,
        defaults={"name": "示范市第二人民医院（HIS 联调）", "short_name": "市二医院", "service_phone": "0571-87000000",
                  "schedule_days": 7},
    )
    if created:
        ReleaseRule.objects.create(hospital=hospital, release_time=dt.time(0, 0), window_days=7, lock_minutes=10)
        Notice.objects.create(hospital=hospital, title="挂号须知", body="号源由医院 HIS 提供；请按时就诊。", version=1)
    HisConnection.objects.update_or_create(
        hospital=hospital,
        defaults={"mode": HisConnection.Mode.HIS_LOCK, "base_url": base_url, "hospital_code": CODE,
                  "secret": secret, "enabled": True},
    )
    return hospital


def wait_until_answering(base_url: str, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/_control/state", timeout=1):  # noqa: S310 (loopback)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start_demo_hospital(*, base_url: str) -> tuple[Hospital, SyncReport]:
    wait_until_answering(base_url)
    hospital = connect_demo_hospital(base_url=base_url)
    return hospital, sync_schedule(hospital=hospital)
