"""The scheduler's jobs under a moving clock: visit reminders at both defaults, the daily release
from the timetable, each job moment run once."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.notifications import scheduler
from guahao.notifications.models import InboxMessage, JobRun, MessagingSettings, OutboxEvent
from guahao.notifications.tests.conftest import ready_to_book, registered
from guahao.scheduling.models import RegistrationType, ReleaseRule, Session, WeeklyTemplate
from guahao.testing import make_account, make_department, make_hospital, make_session, run_worker

pytestmark = pytest.mark.django_db

VISIT = clock.today() + dt.timedelta(days=4)


def at(day: dt.date, hh: int, mm: int = 0, ss: int = 0) -> dt.datetime:
    return clock.at_local(day, dt.time(hh, mm, ss))


def _reminders(account) -> list[str]:
    return list(
        InboxMessage.objects.filter(account=account, topic__startswith="reminder.").order_by("id").values_list("topic", flat=True)
    )


@pytest.fixture
def jobs(settings):
    def switch_on(*names: str) -> None:
        settings.SCHEDULER_JOBS = list(names)

    return switch_on


@pytest.fixture
def booked(world, jobs):
    """A registration for 08:00 on VISIT (its window 08:00-08:30), booked two days before."""
    jobs("reminders")
    session = make_session(world.department, doctor=world.doctor, day=VISIT, slots=2)
    account = make_account()
    patient = ready_to_book(account, world.hospital)
    with clock.frozen_at(at(VISIT - dt.timedelta(days=2), 12)):
        reg = registered(account, patient, session)
    return reg


def _worker_at(moment: dt.datetime) -> None:
    with clock.frozen_at(moment):
        run_worker()


def test_reminders_go_at_18_00_the_day_before_and_2_hours_before(booked):
    account = booked.account
    _worker_at(at(VISIT - dt.timedelta(days=1), 17, 59))
    assert _reminders(account) == []
    _worker_at(at(VISIT - dt.timedelta(days=1), 18, 0, 30))
    assert _reminders(account) == ["reminder.day_before"]
    message = InboxMessage.objects.get(account=account, topic="reminder.day_before")
    assert message.title == "就诊提醒" and message.text.startswith("就诊人张*丰明天") and "08:00-08:30" in message.text
    _worker_at(at(VISIT - dt.timedelta(days=1), 18, 5))
    _worker_at(at(VISIT, 5, 59))
    assert _reminders(account) == ["reminder.day_before"]
    _worker_at(at(VISIT, 6, 0, 30))
    assert _reminders(account) == ["reminder.day_before", "reminder.soon"]
    assert "今天" in InboxMessage.objects.get(account=account, topic="reminder.soon").text
    _worker_at(at(VISIT, 6, 30))
    assert _reminders(account) == ["reminder.day_before", "reminder.soon"]


def test_a_hospital_sets_its_own_reminder_times(booked):
    MessagingSettings.objects.create(
        hospital=booked.session.hospital, remind_day_before_at=dt.time(20, 0), remind_hours_before=0
    )
    _worker_at(at(VISIT - dt.timedelta(days=1), 18, 30))
    assert _reminders(booked.account) == []
    _worker_at(at(VISIT - dt.timedelta(days=1), 20, 1))
    _worker_at(at(VISIT, 6, 30))
    assert _reminders(booked.account) == ["reminder.day_before"]


def test_no_reminder_after_a_cancellation_or_for_a_booking_made_after_it_was_due(world, jobs):
    jobs("reminders")
    session = make_session(world.department, doctor=world.doctor, day=VISIT, slots=2)
    account = make_account()
    patient = ready_to_book(account, world.hospital)
    with clock.frozen_at(at(VISIT - dt.timedelta(days=1), 19)):  # after 18:00 the day before
        registered(account, patient, session)
    _worker_at(at(VISIT - dt.timedelta(days=1), 19, 5))
    assert _reminders(account) == []
    _worker_at(at(VISIT, 6, 1))
    assert _reminders(account) == ["reminder.soon"]


def test_a_cancelled_registration_is_not_reminded(booked):
    from guahao.booking.services import cancel_registration

    with clock.frozen_at(at(VISIT - dt.timedelta(days=2), 13)):
        cancel_registration(account=booked.account, registration_id=booked.id)
        run_worker()
    _worker_at(at(VISIT - dt.timedelta(days=1), 18, 1))
    _worker_at(at(VISIT, 6, 1))
    assert _reminders(booked.account) == []


def test_the_release_job_makes_the_newly_opened_day_from_the_timetable_once(jobs):
    jobs("release")
    hospital = make_hospital()
    ReleaseRule.objects.filter(hospital=hospital).update(release_time=dt.time(7, 0), window_days=7)
    department = make_department(hospital, name="眼科")
    opened = VISIT + dt.timedelta(days=7)
    WeeklyTemplate.objects.create(
        hospital=hospital, department=department, registration_type=RegistrationType.objects.get(hospital=hospital),
        weekday=opened.weekday(), period=Session.Period.MORNING, start=dt.time(8, 0), end=dt.time(11, 0), capacity=12,
    )
    _worker_at(at(VISIT, 5, 59))
    assert not Session.objects.filter(department=department, date=opened).exists()
    _worker_at(at(VISIT, 6, 0, 30))  # an hour before the 07:00 release
    session = Session.objects.get(department=department, date=opened)
    assert session.slots.count() == 12
    _worker_at(at(VISIT, 7, 0, 30))
    assert Session.objects.filter(department=department, date=opened).count() == 1
    (run,) = JobRun.objects.filter(key=f"release:{hospital.id}:{VISIT}")
    assert run.finished_at is not None and run.result == "1"
    assert not scheduler.run_job(name="release", key=run.key)  # done: never run again


def test_each_job_moment_is_enqueued_and_run_once_by_overlapping_schedulers(jobs):
    jobs("reminders", "housekeeping")
    moment = at(VISIT, 9, 0, 10)
    with clock.frozen_at(moment):
        first = scheduler.enqueue_due(holder="a")
        # A second scheduler whose lease overlapped (or a clock step back) finds them enqueued.
        assert scheduler.enqueue_due(holder="b") == 0
    assert first == 2
    events = list(OutboxEvent.objects.filter(topic="job.run"))
    assert sorted(e.payload["job"] for e in events) == ["housekeeping", "reminders"]
    assert JobRun.objects.filter(holder="a").count() == 2 and not JobRun.objects.filter(holder="b").exists()
    key = next(e.payload["key"] for e in events if e.payload["job"] == "reminders")
    with clock.frozen_at(moment):
        assert scheduler.run_job(name="reminders", key=key, runner="a")
        assert not scheduler.run_job(name="reminders", key=key, runner="b")


def test_the_scheduler_marks_no_shows_bans_the_person_and_ends_the_ban_telling_the_patient(world, jobs):
    """Three visits missed: the no_shows job marks each after the session's end plus 30 minutes,
    the third earns a 90-day ban, and the restrictions job ends it after its last day; the patient
    reads each step in 消息."""
    from guahao.booking.states import RegistrationStatus
    from guahao.policies.models import Restriction

    jobs("no_shows", "restrictions")
    account = make_account()
    patient = ready_to_book(account, world.hospital)
    made = []
    for days in (1, 2, 3):
        session = make_session(world.department, day=clock.today() + dt.timedelta(days=days), slots=2)
        made.append(registered(account, patient, session))
    for reg in made:
        ends = reg.session.ends_at
        _worker_at(ends + dt.timedelta(minutes=29))
        reg.refresh_from_db()
        assert reg.status == RegistrationStatus.BOOKED
        _worker_at(ends + dt.timedelta(minutes=31))
        reg.refresh_from_db()
        assert reg.status == RegistrationStatus.NO_SHOW
    titles = list(InboxMessage.objects.filter(account=account).order_by("id").values_list("title", flat=True))
    assert titles.count("爽约记录") == 3 and titles[-1] == "暂停预约"
    ban = Restriction.objects.get()
    banned = InboxMessage.objects.get(account=account, topic="restriction.created")
    assert banned.text == f"就诊人张*丰因90天内爽约3次，在{world.hospital.name}暂停预约至{ban.until:%Y年%m月%d日}。"

    _worker_at(at(ban.until, 23, 59))  # the last day: still in force
    assert not InboxMessage.objects.filter(account=account, topic="restriction.lifted").exists()
    _worker_at(at(ban.until + dt.timedelta(days=1), 0, 6))
    ban.refresh_from_db()
    assert ban.ended_at is not None
    assert InboxMessage.objects.get(account=account, topic="restriction.lifted").title == "恢复预约"
    _worker_at(at(ban.until + dt.timedelta(days=1), 9))
    assert InboxMessage.objects.filter(account=account, topic="restriction.lifted").count() == 1


def test_housekeeping_keeps_sent_messages_90_days_and_the_in_app_list_a_year(world, booker, jobs, settings):
    from guahao.notifications.models import Delivery

    jobs("housekeeping")
    settings.MESSAGE_CHANNELS = ["log"]
    registered(*booker, world.session)  # 预约成功: in the list, and sent to the log channel
    assert Delivery.objects.filter(state=Delivery.State.SENT).count() == 1
    start = clock.now()
    _worker_at(start + dt.timedelta(days=89))
    assert Delivery.objects.count() == 1
    _worker_at(start + dt.timedelta(days=90, hours=1))
    assert Delivery.objects.count() == 0 and InboxMessage.objects.count() == 1
    _worker_at(start + dt.timedelta(days=365, hours=1))
    assert InboxMessage.objects.count() == 0
