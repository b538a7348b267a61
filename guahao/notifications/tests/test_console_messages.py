"""The console's messaging pages: a hospital's own wording (unknown placeholders refused) reaches
the next message; a parked delivery and a parked event are retried by staff, and hospital staff
cannot see the platform's background events (they may concern any hospital)."""

from __future__ import annotations

import pytest

from guahao.console import roles
from guahao.console.testing import console_client, make_staff, superuser_client
from guahao.notifications import services as outbox
from guahao.notifications.models import Delivery, InboxMessage, MessageTemplate, OutboxEvent
from guahao.notifications.tests.conftest import registered
from guahao.testing import run_worker

pytestmark = pytest.mark.django_db

TEMPLATES = "/admin/notifications/messagetemplate/"
DELIVERIES = "/admin/notifications/delivery/"
EVENTS = "/admin/notifications/outboxevent/"


def test_a_hospital_words_its_own_message_and_typos_in_placeholders_are_refused(world, booker):
    client = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[world.hospital]))
    form = {"hospital": world.hospital.id, "topic": "registration.booked", "title": "挂号成功", "body": "{就诊人}已挂{科式}"}
    page = client.post(f"{TEMPLATES}add/", form)
    assert page.status_code == 200 and "未知的占位符：{科式}" in page.content.decode()
    form["body"] = "{就诊人}已挂{科室}，请于{就诊时间}到{就诊地点}。"
    assert client.post(f"{TEMPLATES}add/", form).status_code == 302
    assert MessageTemplate.objects.filter(hospital=world.hospital).count() == 1
    registered(*booker, world.session)
    message = InboxMessage.objects.get(topic="registration.booked")
    assert message.title == "挂号成功" and message.text.startswith("张*丰已挂心血管内科，请于")


def test_staff_send_a_parked_delivery_again(world, booker, flaky):
    flaky.failures = None
    registered(*booker, world.session)
    delivery = Delivery.objects.get()
    Delivery.objects.filter(id=delivery.id).update(state=Delivery.State.PARKED)
    operations = console_client(make_staff(role=roles.OPERATIONS, hospitals=[world.hospital]))
    page = operations.get(f"{DELIVERIES}?state=parked").content.decode()
    assert "预约成功" in page and "模拟渠道第1次失败" in page
    flaky.failures = 0
    operations.post(DELIVERIES, {"action": "send_again", "_selected_action": [delivery.id]})
    run_worker()
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.SENT and len(flaky.sent) == 1


def test_parked_events_are_for_platform_staff_to_retry(world):
    event = outbox.emit("refund.requested", refund_id=0)
    OutboxEvent.objects.filter(id=event.id).update(parked_at=event.created_at, attempts=14, last_error="ProviderTimeout: 无应答")
    hospital_staff = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[world.hospital]))
    assert hospital_staff.get(f"{EVENTS}?state=parked").status_code == 403
    platform = superuser_client()
    page = platform.get(f"{EVENTS}?state=parked").content.decode()
    assert "refund.requested" in page and "ProviderTimeout" in page
    platform.post(EVENTS, {"action": "retry", "_selected_action": [event.id]})
    event.refresh_from_db()
    assert event.parked_at is None and event.attempts == 0
