"""Visit reminders: by default at 18:00 the day before and 2 hours before the patient's time window
(each hospital sets both in 消息设置). A reminder is enqueued once per registration and kind
(Reminder's unique key, written with its event in one transaction). A reminder that would arrive
after the next one is due, or for a registration booked after it was due, is not sent: the patient
has just been told."""

from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, transaction

from guahao import clock
from guahao.booking.models import Registration
from guahao.booking.states import RegistrationStatus
from guahao.notifications.models import MessagingSettings, Reminder, Topic
from guahao.notifications.services import emit

DAY_BEFORE = "day_before"
SOON = "soon"
TOPIC_OF = {DAY_BEFORE: Topic.REMINDER_DAY_BEFORE, SOON: Topic.REMINDER_SOON}


def settings_of(hospital_id: int) -> MessagingSettings:
    """The hospital's 消息设置, or the defaults when it has not saved any."""
    return MessagingSettings.objects.filter(hospital_id=hospital_id).first() or MessagingSettings(hospital_id=hospital_id)


def due_reminders(*, window_start: dt.datetime, booked_at: dt.datetime, settings: MessagingSettings) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """(kind, due, send-before) of each reminder a registration gets, in time order."""
    soon_at = window_start - dt.timedelta(hours=settings.remind_hours_before) if settings.remind_hours_before else None
    found = []
    if settings.remind_day_before:
        visit_day = clock.local(window_start).date()
        due = clock.at_local(visit_day - dt.timedelta(days=1), settings.remind_day_before_at)
        found.append((DAY_BEFORE, due, soon_at or window_start))
    if soon_at is not None:
        found.append((SOON, soon_at, window_start))
    return [(kind, due, before) for kind, due, before in found if booked_at < due < before]


def enqueue_due(*, now: dt.datetime) -> int:
    """Enqueue every reminder due at `now` and not yet enqueued; returns how many."""
    today = clock.local(now).date()
    candidates = (
        Registration.objects.filter(
            status=RegistrationStatus.BOOKED,
            session__date__gte=today,
            session__date__lte=today + dt.timedelta(days=1),
            slot__window_start__gt=now,
        )
        .values_list("id", "session__hospital_id", "slot__window_start", "booked_at")
        .order_by("id")
    )
    sent = set(
        Reminder.objects.filter(registration__in=[c[0] for c in candidates]).values_list("registration_id", "kind")
    )
    per_hospital: dict[int, MessagingSettings] = {}
    enqueued = 0
    for registration_id, hospital_id, window_start, booked_at in candidates:
        settings = per_hospital.get(hospital_id) or per_hospital.setdefault(hospital_id, settings_of(hospital_id))
        for kind, due, before in due_reminders(window_start=window_start, booked_at=booked_at, settings=settings):
            if (registration_id, kind) in sent or not due <= now < before:
                continue
            try:
                with transaction.atomic():
                    Reminder.objects.create(registration_id=registration_id, kind=kind, created_at=now)
                    emit(TOPIC_OF[kind], registration_id=registration_id)
            except IntegrityError:  # enqueued meanwhile by an overlapping run
                continue
            enqueued += 1
    return enqueued
