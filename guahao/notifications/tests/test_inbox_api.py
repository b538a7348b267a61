"""The in-app message list over /api/v1/messages: an account sees and marks only its own messages,
newest first, page by page, with its unread count."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.notifications.models import InboxMessage, Topic
from guahao.testing import api_client, make_account, make_hospital

pytestmark = pytest.mark.django_db


def message(account, *, title: str = "预约成功", minutes_ago: int = 0, read: bool = False, hospital=None, link: str = "/me/registrations?tab=booked") -> InboxMessage:
    moment = clock.now() - dt.timedelta(minutes=minutes_ago)
    return InboxMessage.objects.create(
        account=account,
        hospital=hospital,
        topic=Topic.BOOKED,
        title=title,
        text=f"{title}：就诊人张*丰已预约皮肤科。",
        link=link,
        created_at=moment,
        read_at=moment if read else None,
    )


def test_the_list_is_newest_first_with_the_unread_count():
    account = make_account()
    hospital = make_hospital()
    message(account, title="最早", minutes_ago=30, read=True, hospital=hospital)
    message(account, title="较早", minutes_ago=20, hospital=hospital)
    message(account, title="最新", minutes_ago=1, hospital=hospital)
    message(make_account(), title="别人的")

    answer = api_client(account).get("/api/v1/messages")
    assert answer.status_code == 200
    body = answer.json()
    assert [m["title"] for m in body["items"]] == ["最新", "较早", "最早"]
    assert [m["read"] for m in body["items"]] == [False, False, True]
    assert body["items"][0]["topic_label"] == "预约成功" and body["items"][0]["link"] == "/me/registrations?tab=booked"
    assert body["unread"] == 2 and body["next_cursor"] is None
    assert api_client(account).get("/api/v1/messages/unread-count").json() == {"unread": 2}


def test_pages_follow_the_cursor_without_repeats_even_when_new_messages_arrive():
    account = make_account()
    same_moment = clock.now() - dt.timedelta(hours=1)
    for n in range(5):  # equal times: the id breaks the tie
        InboxMessage.objects.create(account=account, topic=Topic.BOOKED, title=f"消息{n}", text="…", created_at=same_moment)
    client = api_client(account)
    first = client.get("/api/v1/messages", limit=2).json()
    message(account, title="翻页时到达")
    second = client.get("/api/v1/messages", limit=2, cursor=first["next_cursor"]).json()
    third = client.get("/api/v1/messages", limit=2, cursor=second["next_cursor"]).json()
    titles = [m["title"] for page in (first, second, third) for m in page["items"]]
    assert titles == ["消息4", "消息3", "消息2", "消息1", "消息0"]
    assert third["next_cursor"] is None


def test_marking_read_keeps_the_first_read_time_and_lowers_the_count():
    account = make_account()
    unread = message(account)
    client = api_client(account)
    first = client.post(f"/api/v1/messages/{unread.id}/read")
    assert first.status_code == 200 and first.json()["read"] is True
    with clock.travel(dt.timedelta(minutes=5)):
        again = client.post(f"/api/v1/messages/{unread.id}/read")
    assert again.status_code == 200 and again.json()["read_at"] == first.json()["read_at"]
    assert client.get("/api/v1/messages/unread-count").json() == {"unread": 0}


def test_read_all_marks_only_the_accounts_own_messages():
    account, other = make_account(), make_account()
    for minutes in (1, 2, 3):
        message(account, minutes_ago=minutes)
    message(account, read=True)
    theirs = message(other)

    answer = api_client(account).post("/api/v1/messages/read-all")
    assert answer.json() == {"marked": 3, "unread": 0}
    theirs.refresh_from_db()
    assert theirs.read_at is None
    assert api_client(other).get("/api/v1/messages/unread-count").json() == {"unread": 1}


def test_another_accounts_message_is_not_found_and_stays_unread():
    owner, stranger = make_account(), make_account()
    theirs = message(owner)
    answer = api_client(stranger).post(f"/api/v1/messages/{theirs.id}/read")
    assert answer.status_code == 404
    assert answer.json() == {"code": "message_not_found", "message": "消息不存在"}
    theirs.refresh_from_db()
    assert theirs.read_at is None
    assert all(m["id"] != theirs.id for m in api_client(stranger).get("/api/v1/messages").json()["items"])


@pytest.mark.parametrize("bad_id", ["abc", "-1", "99999999999999999999999"])
def test_a_bad_message_id_gets_a_chinese_error_not_a_server_error(bad_id):
    answer = api_client(make_account()).post(f"/api/v1/messages/{bad_id}/read")
    assert 400 <= answer.status_code < 500
    assert any("\u4e00" <= ch <= "\u9fff" for ch in answer.json()["message"])


def test_a_forged_cursor_is_refused_in_chinese():
    answer = api_client(make_account()).get("/api/v1/messages", cursor="x_1")
    assert answer.status_code == 400
    assert answer.json() == {"code": "invalid_cursor", "message": "翻页参数无效，请刷新列表"}


def test_messages_need_a_signed_in_account():
    assert api_client().get("/api/v1/messages").status_code == 401
    assert api_client().post("/api/v1/messages/read-all").status_code == 401
