"""The scheduler: exactly one process at a time (the holder of the "scheduler" lease in the
database) enqueues the scheduled jobs, each as a `job.run` outbox event under a unique JobRun key
for its due moment ("reminders:2026-11-26T10:01", "reconcile:2026-11-25"). The unique key means a
moment's job is enqueued once however many schedulers overlap (a lease that changed hands, a clock
that jumped); the compare-and-set on JobRun.started_at means one worker runs it. Jobs are also
idempotent, so a job whose worker died half-way is simply run again after its claim lapses."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from guahao import clock
from guahao.notifications.models import JobRun
from guahao.notifications.services import emit

log = logging.getLogger("guahao.scheduler")

# A run claimed this long ago and not finished is taken to have died with its worker.
JOB_STALE = dt.timedelta(minutes=30)


@dataclass(frozen=True)
class Due:
    key: str
    moment: dt.datetime


@dataclass(frozen=True)
class Job:
    name: str
    # The due moments at `now` (usually one: the current period's start, or today's run once its
    # time has come).
    due: Callable[[dt.datetime], list[Due]]
    # Runs the job for one due moment; returns a short result for the record.
    run: Callable[[str, dt.datetime], object]
    description: str


def every(name: str, interval: dt.timedelta) -> Callable[[dt.datetime], list[Due]]:
    def due(now: dt.datetime) -> list[Due]:
        epoch = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        start = epoch + ((now - epoch) // interval) * interval
        return [Due(f"{name}:{start:%Y-%m-%dT%H:%M}", start)]

    return due


def daily(name: str, at: dt.time) -> Callable[[dt.datetime], list[Due]]:
    """Once a day at the hospital's local time `at`; a scheduler that was down at that moment runs it
    when it comes back the same day."""

    def due(now: dt.datetime) -> list[Due]:
        today = clock.local(now).date()
        moment = clock.at_local(today, at)
        return [Due(f"{name}:{today}", moment)] if now >= moment else []

    return due


# --- the jobs ---------------------------------------------------------------------------------


def _reminders(_key: str, moment: dt.datetime) -> int:
    from guahao.notifications import reminders

    return reminders.enqueue_due(now=clock.now())


def _no_shows(_key: str, moment: dt.datetime) -> int:
    from guahao.policies import services as policies

    return policies.mark_no_shows(now=clock.now())


def _restrictions(_key: str, moment: dt.datetime) -> int:
    from guahao.policies import services as policies

    return policies.end_restrictions(today=clock.local(moment).date())


def _reconcile(_key: str, moment: dt.datetime) -> str:
    from guahao.payments import reconciliation

    day = clock.local(moment).date() - dt.timedelta(days=1)
    results = reconciliation.run_day(day=day)
    return f"{day}: {len(results)} 个对账来源"


def _release_due(now: dt.datetime) -> list[Due]:
    """Each local-pool hospital, an hour before each release time (today's, or tomorrow's when it is
    before 01:00): the sessions of the day that opens at that release (hospitals with an HIS get
    theirs from schedule sync)."""
    from guahao.catalog.models import Hospital
    from guahao.scheduling.models import ReleaseRule

    today = clock.local(now).date()
    found = []
    own = dict(ReleaseRule.objects.filter(department__isnull=True).values_list("hospital_id", "release_time"))
    for hospital_id in Hospital.objects.filter(is_active=True).values_list("id", flat=True):
        release_time = own.get(hospital_id) or ReleaseRule._meta.get_field("release_time").default
        for release_day in (today, today + dt.timedelta(days=1)):
            moment = clock.at_local(release_day, release_time) - RELEASE_LEAD
            if now >= moment:
                found.append(Due(f"release:{hospital_id}:{release_day}", moment))
    return found


# The release job makes a day's sessions this long before they open, so that patients see them
# (as 即将放号) before the release minute, and the job is never racing the first "book".
RELEASE_LEAD = dt.timedelta(hours=1)


def _release(key: str, moment: dt.datetime) -> int:
    from guahao.catalog.models import Hospital
    from guahao.scheduling.models import ReleaseRule
    from guahao.scheduling.services import release_day_from_templates

    _, hospital_id, release_day = key.split(":")
    hospital = Hospital.objects.select_related("his_connection").get(id=int(hospital_id))
    connection = getattr(hospital, "his_connection", None)
    if connection is not None and connection.mode != "local_pool":
        return 0
    rule = ReleaseRule.objects.filter(hospital=hospital, department__isnull=True).first() or ReleaseRule()
    day = dt.date.fromisoformat(release_day) + dt.timedelta(days=rule.window_days)
    return len(release_day_from_templates(hospital=hospital, date=day).created)


def _housekeeping(_key: str, moment: dt.datetime) -> int:
    from guahao.limits import services as limits
    from guahao.notifications.models import Delivery, InboxMessage, OutboxEvent
    from guahao.patients import services as patients

    now = clock.now()
    patients.purge_expired_credentials(now=now)
    limits.purge_expired(now=now)
    # The scheduler's own traces: a week is plenty to see that the jobs ran.
    week_ago = now - dt.timedelta(days=7)
    done = JobRun.objects.filter(finished_at__lt=week_ago).delete()[0]
    done += OutboxEvent.objects.filter(topic="job.run", processed_at__lt=week_ago).delete()[0]
    # Copies of messages are kept no longer than they serve (PIPL: the least for the shortest):
    # what went out to a channel for 90 days (enough to answer "did I get it?"), the in-app list a year.
    done += Delivery.objects.filter(
        state__in=(Delivery.State.SENT, Delivery.State.REFUSED), created_at__lt=now - DELIVERY_RETENTION
    ).delete()[0]
    done += InboxMessage.objects.filter(created_at__lt=now - INBOX_RETENTION).delete()[0]
    return done


DELIVERY_RETENTION = dt.timedelta(days=90)
INBOX_RETENTION = dt.timedelta(days=365)


JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job("reminders", every("reminders", dt.timedelta(minutes=1)), _reminders, "就诊提醒"),
        Job("no_shows", every("no_shows", dt.timedelta(minutes=5)), _no_shows, "爽约标记"),
        Job("restrictions", daily("restrictions", dt.time(0, 5)), _restrictions, "到期解除预约限制"),
        Job("reconcile", daily("reconcile", dt.time(10, 30)), _reconcile, "前一日对账"),
        Job("release", _release_due, _release, "按出诊模板生成新开放日期的排班"),
        Job("housekeeping", every("housekeeping", dt.timedelta(hours=1)), _housekeeping, "清理过期数据"),
    )
}


def enqueue_due(*, holder: str, now: dt.datetime | None = None) -> int:
    """Enqueue every job moment that is due and not yet enqueued. Call only while holding the
    scheduler lease (the unique key keeps it safe even when that is briefly not so)."""
    now = now or clock.now()
    enqueued = 0
    for job in JOBS.values():
        if settings.SCHEDULER_JOBS is not None and job.name not in settings.SCHEDULER_JOBS:
            continue
        for due in job.due(now):
            if JobRun.objects.filter(key=due.key).exists():
                continue
            try:
                with transaction.atomic():
                    JobRun.objects.create(key=due.key, holder=holder, created_at=due.moment)
                    emit("job.run", job=job.name, key=due.key, moment=due.moment.isoformat())
            except IntegrityError:  # another scheduler enqueued this moment first
                continue
            enqueued += 1
    return enqueued


def run_job(*, name: str, key: str, runner: str = "worker") -> bool:
    """Run one enqueued job moment, unless another worker is running or has run it. True when this
    call ran it."""
    job = JOBS.get(name)
    if job is None:
        log.error("unknown scheduled job", extra={"job": name, "key": key})
        return False
    now = clock.now()
    with transaction.atomic():
        claimed = JobRun.objects.filter(
            Q(started_at__isnull=True) | Q(started_at__lt=now - JOB_STALE), key=key, finished_at__isnull=True
        ).update(started_at=now, runner=runner[:100])
    if not claimed:
        return False
    moment = JobRun.objects.values_list("created_at", flat=True).get(key=key)
    result = job.run(key, moment)
    JobRun.objects.filter(key=key).update(finished_at=clock.now(), result=str(result)[:200])
    log.info("scheduled job done", extra={"job": name, "key": key, "result": str(result)[:200]})
    return True
