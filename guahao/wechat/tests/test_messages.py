"""Template messages through the simulator: the request WeChat gets, the shared access_token, and
how WeChat's errors reach the worker (ChannelError retries, ChannelRefused does not)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection

from guahao import clock
from guahao.notifications.channels.base import ChannelError, ChannelRefused, Outgoing
from guahao.notifications.channels.wechat import WechatTemplateChannel
from guahao.notifications.models import (
    Delivery,
    InboxMessage,
    MessagingSettings,
    OutboxEvent,
    Topic,
)
from guahao.testing import make_account, make_hospital
from guahao.wechat import services, tokens
from guahao.wechat.models import AccessToken, WechatBinding, WechatTemplate
from guahao.wechat.simulator import DEMO_FOLLOWER

TEMPLATE_ID = "booked-TPL-test-000000000000000000000000001"
OPENID = "oTest-Patient-0000000000000000001"
PARAMS = {
    "就诊人": "张*丰",
    "科室": "皮肤科门诊（门诊楼六楼A区，靠近自助挂号机与收费窗口）",
    "就诊时间": "11月27日 08:00-08:30",
    "挂号单号": "GH20261127000123",
}


@pytest.fixture
def setup(db, sim):
    hospital = make_hospital()
    MessagingSettings.objects.create(hospital=hospital, wechat_enabled=True)
    official = sim.official_account(hospital)
    sim.template(TEMPLATE_ID, ["thing1", "thing2", "time3", "character_string4"])
    WechatTemplate.objects.create(
        official_account=official,
        topic=Topic.BOOKED,
        template_id=TEMPLATE_ID,
        data={"thing1": "{就诊人}", "thing2": "{科室}", "time3": "{就诊时间}", "character_string4": "{挂号单号}"},
    )
    account = make_account()
    sim.follow(OPENID)
    WechatBinding.objects.create(app_id=official.app_id, openid=OPENID, account=account, bound_at=clock.now())
    return hospital, official, account


def outgoing(account, hospital, *, delivery_id: int = 7) -> Outgoing:
    return Outgoing(
        delivery_id=delivery_id,
        account_id=account.id,
        hospital_id=hospital.id,
        topic=Topic.BOOKED,
        title="预约成功",
        text="就诊人张*丰已预约……",
        params=PARAMS,
    )


def test_the_channel_wants_only_bound_accounts_of_hospitals_with_wechat_on_and_a_template(setup) -> None:
    hospital, official, account = setup
    channel = WechatTemplateChannel()
    assert channel.wants(account_id=account.id, hospital_id=hospital.id, topic=Topic.BOOKED)
    assert not channel.wants(account_id=account.id, hospital_id=hospital.id, topic=Topic.NO_SHOW)  # no template
    assert not channel.wants(account_id=make_account().id, hospital_id=hospital.id, topic=Topic.BOOKED)  # unbound
    assert not channel.wants(account_id=account.id, hospital_id=None, topic=Topic.BOOKED)
    MessagingSettings.objects.filter(hospital=hospital).update(wechat_enabled=False)
    assert not channel.wants(account_id=account.id, hospital_id=hospital.id, topic=Topic.BOOKED)
    MessagingSettings.objects.filter(hospital=hospital).update(wechat_enabled=True)
    official.enabled = False
    official.save()
    assert not channel.wants(account_id=account.id, hospital_id=hospital.id, topic=Topic.BOOKED)


def test_the_template_message_is_wechats_request_with_fields_cut_to_their_limits(setup, sim, settings) -> None:
    hospital, official, account = setup
    settings.PUBLIC_URL = "https://guahao.example-hospital.cn"
    event = OutboxEvent.objects.create(topic=Topic.BOOKED, created_at=clock.now(), available_at=clock.now())
    delivery = Delivery.objects.create(
        event=event, channel="wechat", account=account, hospital=hospital, topic=Topic.BOOKED, title="预约成功",
        text="…", params=PARAMS, created_at=clock.now(), available_at=clock.now(),
    )
    InboxMessage.objects.create(
        account=account, hospital=hospital, event=event, topic=Topic.BOOKED, title="预约成功", text="…",
        link="/me/registrations", created_at=clock.now(),
    )
    msgid = WechatTemplateChannel().send(outgoing(account, hospital, delivery_id=delivery.id))
    [sent] = sim.messages(touser=OPENID)
    assert str(sent["msgid"]) == msgid
    assert sent["template_id"] == TEMPLATE_ID
    assert sent["url"] == "https://guahao.example-hospital.cn/me/registrations"
    assert sent["client_msg_id"] == f"guahao-{delivery.id}"
    assert sent["data"]["thing1"] == {"value": "张*丰"}
    assert sent["data"]["time3"] == {"value": "11月27日 08:00-08:30"}
    assert sent["data"]["character_string4"] == {"value": "GH20261127000123"}
    department = sent["data"]["thing2"]["value"]
    assert len(department) == 20 and department.endswith("…") and department.startswith("皮肤科门诊")


def test_the_same_delivery_sent_twice_is_one_message_in_wechat(setup, sim) -> None:
    hospital, _, account = setup
    channel = WechatTemplateChannel()
    first = channel.send(outgoing(account, hospital))
    again = channel.send(outgoing(account, hospital))  # the worker's retry after a lost answer
    assert first == again and len(sim.messages(touser=OPENID)) == 1


def test_an_expired_token_is_refreshed_once_and_the_message_delivered(setup, sim) -> None:
    hospital, _, account = setup
    channel = WechatTemplateChannel()
    channel.send(outgoing(account, hospital, delivery_id=1))
    assert sim.calls()["token"] == 1
    sim.expire_tokens()  # WeChat says 42001 although our cache still trusts the token
    channel.send(outgoing(account, hospital, delivery_id=2))
    assert sim.calls()["token"] == 2 and sim.calls()["send"] == 3
    assert len(sim.messages(touser=OPENID)) == 2
    assert AccessToken.objects.get().version == 2


def test_a_token_is_refreshed_five_minutes_before_it_expires(setup, sim) -> None:
    _, official, _ = setup
    first = tokens.access_token(official)
    with clock.travel(dt.timedelta(seconds=7200 - 360)):
        assert tokens.access_token(official) == first
    with clock.travel(dt.timedelta(seconds=7200 - 240)):
        assert tokens.access_token(official).version == first.version + 1
    assert sim.calls()["token"] == 2


def test_a_user_who_unfollowed_is_refused_for_good(setup, sim) -> None:
    hospital, _, account = setup
    sim.unfollow(OPENID)
    with pytest.raises(ChannelRefused, match="43004"):
        WechatTemplateChannel().send(outgoing(account, hospital))


def test_an_openid_wechat_does_not_know_is_refused(setup, sim) -> None:
    hospital, official, account = setup
    WechatBinding.objects.filter(account=account).update(openid="oNever-Seen-By-WeChat-00000001")
    with pytest.raises(ChannelRefused, match="40003"):
        WechatTemplateChannel().send(outgoing(account, hospital))


@pytest.mark.parametrize(("fault", "expected"), [("busy", "-1"), ("api_limit", "45009"), ("error", "HTTP 500"), ("timeout", "微信无应答")])
def test_a_busy_or_silent_wechat_is_tried_again_later(setup, sim, fault, expected) -> None:
    hospital, _, account = setup
    sim.fault(fault, api="send", latency_ms=3000 if fault == "timeout" else None)
    with pytest.raises(ChannelError, match=expected):
        WechatTemplateChannel().send(outgoing(account, hospital))
    WechatTemplateChannel().send(outgoing(account, hospital))  # the worker's next try
    assert len(sim.messages(touser=OPENID)) == 1


def test_a_wrong_template_id_is_a_configuration_error_retried_after_the_fix(setup, sim, caplog) -> None:
    hospital, _, account = setup
    WechatTemplate.objects.update(template_id="no-such-template")
    with pytest.raises(ChannelError, match="40037"):
        WechatTemplateChannel().send(outgoing(account, hospital))
    assert "wechat configuration problem" in caplog.text
    WechatTemplate.objects.update(template_id=TEMPLATE_ID)
    WechatTemplateChannel().send(outgoing(account, hospital))
    assert len(sim.messages(touser=OPENID)) == 1


def test_a_turned_off_channel_refuses_a_pending_delivery(setup) -> None:
    hospital, _, account = setup
    MessagingSettings.objects.filter(hospital=hospital).update(wechat_enabled=False)
    with pytest.raises(ChannelRefused):
        WechatTemplateChannel().send(outgoing(account, hospital))


def test_values_are_cut_to_wechats_limits() -> None:
    data = services.template_data(
        {"thing1": "{科室}", "phrase2": "预约成功啦啦啦", "character_string3": "{挂号单号}", "time4": "{就诊时间}", "thing5": "{没有}"},
        {"科室": "一" * 25, "挂号单号": "9" * 40, "就诊时间": "11月27日 08:00-08:30"},
    )
    assert data == {
        "thing1": "一" * 19 + "…",
        "phrase2": "预约成功啦",
        "character_string3": "9" * 32,
        "time4": "11月27日 08:00-08:30",
        "thing5": "",
    }


@pytest.mark.django_db(transaction=True)
def test_many_processes_share_one_token_and_fetch_it_once(sim) -> None:
    hospital = make_hospital()
    official = sim.official_account(hospital)
    sim.fault("slow", api="token", latency_ms=400)  # the refresh takes a while: all callers overlap
    results: list = []
    errors: list = []
    start = threading.Barrier(5)

    def caller() -> None:
        try:
            start.wait()
            results.append(tokens.access_token(official))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=caller) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len({token.value for token in results}) == 1 and len(results) == 5
    assert sim.calls()["token"] == 1

    # A token WeChat refused is replaced once however many processes saw it refused.
    stale = results[0].version
    sim.fault("slow", api="token", latency_ms=400)
    results.clear()

    def replacer() -> None:
        try:
            results.append(tokens.access_token(official, stale_version=stale))
        finally:
            connection.close()

    threads = [threading.Thread(target=replacer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len({token.value for token in results}) == 1 and sim.calls()["token"] == 2


def test_the_demo_account_sends_through_the_simulator_with_its_templates(db, sim) -> None:
    from guahao.wechat.demo import configure_demo_account

    hospital = make_hospital()
    configure_demo_account(hospital, base_url=sim.url)
    configure_demo_account(hospital, base_url=sim.url)  # idempotent
    account = make_account()
    services.bind_openid(account_id=account.id, app_id=sim.app_id, openid=DEMO_FOLLOWER)
    channel = WechatTemplateChannel()
    for number, topic in enumerate((Topic.BOOKED, Topic.REMINDER_SOON, Topic.CANCELLED), start=1):
        assert channel.wants(account_id=account.id, hospital_id=hospital.id, topic=topic)
        channel.send(Outgoing(delivery_id=number, account_id=account.id, hospital_id=hospital.id, topic=topic, title="t", text="x", params=PARAMS))
    assert len(sim.messages(touser=DEMO_FOLLOWER)) == 3
