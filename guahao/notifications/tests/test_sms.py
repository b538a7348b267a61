"""SMS through Aliyun's SendSms, against the simulator running as a real process: the signature
the provider checks, what a message carries, and how each of the provider's answers reaches the
worker (retry, never, or a configuration problem someone must fix)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import httpx
import pytest

from guahao.errors import UpstreamUnavailable
from guahao.notifications.channels.base import ChannelError, ChannelRefused, Outgoing
from guahao.notifications.channels.sms import SmsChannel
from guahao.notifications.models import MessagingSettings, Topic
from guahao.notifications.sms.signing import percent_encode, signature
from guahao.notifications.sms.testing import (
    CODE_TEMPLATE,
    SIGN_NAME,
    SmsSimulator,
    running_sms_simulator,
)
from guahao.notifications.sms.variables import SMS_VARIABLES, template_param
from guahao.notifications.templates import PLACEHOLDERS
from guahao.patients import services as patients
from guahao.testing import make_account, make_hospital, make_ip

BOOKED_TEMPLATE = "SMS_900000002"  # ${name} ${hospital} ${dept} ${time} ${seq} ${no}
BOOKED_PARAMS = {
    "就诊人": "张*丰",
    "医院": "市一医院",
    "科室": "皮肤科",
    "就诊时间": "11月27日 08:00-08:30",
    "号序": "3",
    "挂号单号": "R20261127003",
    "取消说明": "",
}


@pytest.fixture(scope="module")
def simulator() -> Iterator[SmsSimulator]:
    with running_sms_simulator() as sim:
        yield sim


@pytest.fixture
def sim(simulator: SmsSimulator, settings) -> SmsSimulator:
    simulator.reset()
    simulator.use_in(settings)
    return simulator


@pytest.fixture
def hospital(db):
    hospital = make_hospital(name="杭州市第一人民医院")
    MessagingSettings.objects.create(
        hospital=hospital, sms_enabled=True, sms_sign_name=SIGN_NAME, sms_templates={Topic.BOOKED: BOOKED_TEMPLATE}
    )
    return hospital


def booked(account, hospital, *, delivery_id: int = 41, params: dict | None = None) -> Outgoing:
    return Outgoing(
        delivery_id=delivery_id,
        account_id=account.id,
        hospital_id=hospital.id,
        topic=Topic.BOOKED,
        title="预约成功",
        text="（公众号与站内消息的文字，短信用医院报备的模板）",
        params=BOOKED_PARAMS if params is None else params,
    )


# --- the signature ------------------------------------------------------------------------------


def test_the_signature_matches_aliyuns_published_example():
    # The worked example of Aliyun's "签名机制" page: AccessKey testid / testsecret, DescribeRegions.
    params = {
        "TimeStamp": "2016-02-23T12:46:24Z",
        "Format": "XML",
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "Version": "2014-05-26",
        "SignatureVersion": "1.0",
    }
    assert signature("testsecret", "GET", params) == "CT9X0VtwR86fNWSnsc6v8YGOjuE="


def test_percent_encoding_is_aliyuns_not_form_encoding():
    assert percent_encode("a b*c~d-e_f.g") == "a%20b%2Ac~d-e_f.g"
    assert percent_encode("医院") == "%E5%8C%BB%E9%99%A2"
    assert percent_encode('{"a":"1"}') == "%7B%22a%22%3A%221%22%7D"


def test_a_signed_request_is_accepted_and_a_wrong_secret_is_refused(sim):
    sent = sim.client().send_sms(phone="13912345678", sign_name=SIGN_NAME, template_code=CODE_TEMPLATE, template_param={"code": "246810"})
    assert sent.code == "OK" and sent.biz_id and sent.request_id

    forged = sim.client(secret="not-the-secret").send_sms(phone="13912345679", sign_name=SIGN_NAME, template_code=CODE_TEMPLATE, template_param={"code": "1"})
    assert (forged.http_status, forged.code) == (400, "SignatureDoesNotMatch")
    assert "13912345679" not in forged.summary  # the provider's string to sign stays out of logs
    assert [m["phone"] for m in sim.messages()] == ["13912345678"]


def test_an_unknown_access_key_and_a_stale_timestamp_are_refused(sim):
    unknown = sim.client(access_key_id="LTAI-nobody", secret="x").send_sms(phone="13912345678", sign_name=SIGN_NAME, template_code=CODE_TEMPLATE, template_param={"code": "1"})
    assert (unknown.http_status, unknown.code) == (404, "InvalidAccessKeyId.NotFound")

    skewed = sim.client(now=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16))
    stale = skewed.send_sms(phone="13912345678", sign_name=SIGN_NAME, template_code=CODE_TEMPLATE, template_param={"code": "1"})
    assert (stale.http_status, stale.code) == (400, "InvalidTimeStamp.Expired")
    assert sim.messages() == []


def test_a_replayed_request_is_refused_by_its_nonce(sim):
    form = sim.client().signed_params(phone="13912345678", sign_name=SIGN_NAME, template_code=CODE_TEMPLATE, template_param={"code": "135790"})
    first = httpx.post(sim.url + "/", data=form, timeout=5)
    replay = httpx.post(sim.url + "/", data=form, timeout=5)
    assert first.json()["Code"] == "OK"
    assert (replay.status_code, replay.json()["Code"]) == (400, "SignatureNonceUsed")
    assert len(sim.messages()) == 1


def test_every_placeholder_has_one_ascii_sms_variable():
    assert set(SMS_VARIABLES) == set(PLACEHOLDERS)
    names = list(SMS_VARIABLES.values())
    assert len(set(names)) == len(names) and all(n.isascii() and n.isidentifier() for n in names)
    assert template_param({"就诊人": "张*丰", "取消说明": "", "未知": "x"}) == {"name": "张*丰"}


# --- the channel ----------------------------------------------------------------------------------


def test_a_message_goes_with_the_hospitals_sign_name_template_and_ascii_variables(sim, hospital):
    account = make_account()
    biz_id = SmsChannel().send(booked(account, hospital, delivery_id=41))
    [message] = sim.messages(phone=account.phone)
    assert message["biz_id"] == biz_id
    assert message["sign_name"] == SIGN_NAME and message["template_code"] == BOOKED_TEMPLATE
    assert message["out_id"] == "guahao-41"
    assert message["params"] == {"name": "张*丰", "hospital": "市一医院", "dept": "皮肤科", "time": "11月27日 08:00-08:30", "seq": "3", "no": "R20261127003"}
    assert message["text"] == "【医院挂号】就诊人张*丰已预约市一医院皮肤科，就诊时间11月27日 08:00-08:30，第3号，挂号单号R20261127003，请按时到院取号。"


def test_the_channel_wants_only_configured_topics_of_hospitals_that_turned_sms_on(sim, hospital, settings):
    channel, account = SmsChannel(), make_account()
    wants = lambda topic=Topic.BOOKED, hospital_id=hospital.id: channel.wants(account_id=account.id, hospital_id=hospital_id, topic=topic)  # noqa: E731
    assert wants()
    assert not wants(topic=Topic.CANCELLED)  # no template code for it
    assert not wants(hospital_id=None)
    MessagingSettings.objects.filter(hospital=hospital).update(sms_sign_name="")
    assert wants()  # the platform's sign name stands in
    settings.SMS_SIGN_NAME = ""
    assert not wants()
    settings.SMS_SIGN_NAME = SIGN_NAME
    settings.SMS_ACCESS_KEY_SECRET = ""
    assert not wants()  # no credentials: no SMS at all
    settings.SMS_ACCESS_KEY_SECRET = sim.keys[settings.SMS_ACCESS_KEY_ID]
    MessagingSettings.objects.filter(hospital=hospital).update(sms_enabled=False)
    assert not wants()
    with pytest.raises(ChannelRefused):  # turned off after the event: this delivery never goes
        channel.send(booked(account, hospital))


def test_the_platform_sign_name_is_used_when_the_hospital_has_none(sim, hospital, settings):
    MessagingSettings.objects.filter(hospital=hospital).update(sms_sign_name="")
    sim.add_sign("挂号平台")
    settings.SMS_SIGN_NAME = "挂号平台"
    account = make_account()
    SmsChannel().send(booked(account, hospital))
    assert sim.messages(phone=account.phone)[0]["sign_name"] == "挂号平台"


def test_an_invalid_number_is_refused_for_good(sim, hospital):
    account = make_account(phone="10012345678")
    with pytest.raises(ChannelRefused, match="isv.MOBILE_NUMBER_ILLEGAL"):
        SmsChannel().send(booked(account, hospital))


def test_the_providers_rate_limit_is_retried_later(sim, hospital):
    account, channel = make_account(), SmsChannel()
    channel.send(booked(account, hospital, delivery_id=1))
    with pytest.raises(ChannelError, match="isv.BUSINESS_LIMIT_CONTROL"):
        channel.send(booked(account, hospital, delivery_id=2))
    for n in range(3, 7):
        sim.advance(61)
        channel.send(booked(account, hospital, delivery_id=n))
    sim.advance(61)
    with pytest.raises(ChannelError, match="小时级"):  # five an hour
        channel.send(booked(account, hospital, delivery_id=7))
    assert [m["out_id"] for m in sim.messages(phone=account.phone)] == [f"guahao-{n}" for n in (1, 3, 4, 5, 6)]


@pytest.mark.parametrize("fault", ["error", "unavailable", "throttling"])
def test_a_provider_fault_is_retried_later(sim, hospital, fault):
    sim.fault(fault)
    account = make_account()
    with pytest.raises(ChannelError):
        SmsChannel().send(booked(account, hospital))
    assert sim.messages() == []
    SmsChannel().send(booked(account, hospital))  # the fault has passed
    assert len(sim.messages()) == 1


def test_no_answer_in_time_is_retried_later(sim, hospital, settings):
    settings.SMS_TIMEOUT = 0.5
    sim.fault("timeout", latency_ms=2000)
    with pytest.raises(ChannelError, match="无应答"):
        SmsChannel().send(booked(make_account(), hospital))


@pytest.mark.parametrize(
    ("breakage", "code"),
    [
        ("template", "isv.SMS_TEMPLATE_ILLEGAL"),
        ("sign_name", "isv.SMS_SIGNATURE_ILLEGAL"),
        ("missing_variable", "isv.TEMPLATE_MISSING_PARAMETERS"),
        ("secret", "SignatureDoesNotMatch"),
        ("key", "InvalidAccessKeyId.NotFound"),
    ],
)
def test_a_configuration_problem_is_retried_and_logged_for_staff(sim, hospital, settings, caplog, breakage, code):
    params = dict(BOOKED_PARAMS)
    if breakage == "template":
        MessagingSettings.objects.filter(hospital=hospital).update(sms_templates={Topic.BOOKED: "SMS_TYPO"})
    elif breakage == "sign_name":
        MessagingSettings.objects.filter(hospital=hospital).update(sms_sign_name="未报备的签名")
    elif breakage == "missing_variable":
        del params["挂号单号"]
    elif breakage == "secret":
        settings.SMS_ACCESS_KEY_SECRET = "rotated-elsewhere"
    else:
        settings.SMS_ACCESS_KEY_ID = "LTAI-deleted"
    caplog.set_level(logging.ERROR, logger="guahao.messages.sms")
    with pytest.raises(ChannelError, match=code.replace(".", r"\.")):
        SmsChannel().send(booked(make_account(), hospital, params=params))
    assert [r.getMessage() for r in caplog.records] == ["sms configuration problem: fix the keys, sign name or template code"]
    assert sim.messages() == []


# --- sign-in codes ---------------------------------------------------------------------------------


def test_sign_in_codes_go_through_the_provider_and_sign_the_patient_in(sim, settings, db):
    settings.SMS_CHANNEL = "aliyun"
    phone, ip = "13812345670", make_ip()
    patients.send_sms_code(phone=phone, client_ip=ip)
    [message] = sim.messages(phone=phone)
    assert (message["sign_name"], message["template_code"]) == (SIGN_NAME, CODE_TEMPLATE)
    code = message["params"]["code"]
    assert message["text"] == f"【{SIGN_NAME}】您的验证码为{code}，5分钟内有效，请勿告诉他人。"
    assert patients.login(phone=phone, code=code, client_ip=ip)


def test_a_refused_sign_in_code_lets_the_patient_ask_again(sim, settings, db):
    settings.SMS_CHANNEL = "aliyun"
    settings.SMS_CODE_TEMPLATE = "SMS_NOT_APPROVED"
    phone = "13812345671"
    with pytest.raises(UpstreamUnavailable, match="短信发送失败"):
        patients.send_sms_code(phone=phone, client_ip=make_ip())
    settings.SMS_CODE_TEMPLATE = CODE_TEMPLATE
    patients.send_sms_code(phone=phone, client_ip=make_ip())  # at once: the failed code was forgotten
    assert len(sim.messages(phone=phone)) == 1


# --- the simulator's state ------------------------------------------------------------------------


def test_the_simulator_keeps_templates_and_sent_messages_in_its_state_file(tmp_path):
    state = tmp_path / "sms.json"
    with running_sms_simulator(state=state) as first:
        first.add_template("SMS_1", "您的号码${no}")
        first.client().send_sms(phone="13912345678", sign_name=SIGN_NAME, template_code="SMS_1", template_param={"no": "7"})
    with running_sms_simulator(state=state) as again:
        assert again.state()["templates"]["SMS_1"] == "您的号码${no}"
        assert [m["text"] for m in again.messages()] == ["【医院挂号】您的号码7"]
        refused = again.client().send_sms(phone="13912345678", sign_name=SIGN_NAME, template_code="SMS_1", template_param={"no": "8"})
        assert refused.code == "isv.BUSINESS_LIMIT_CONTROL"  # the minute's history survived too
