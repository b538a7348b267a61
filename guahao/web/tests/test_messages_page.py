"""消息 with Django's test client: the list (unread ones stand out), opening a message marks it read
and leads to its page, 全部已读, and the unread badge in the navigation of the home page and others."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from guahao import clock
from guahao.notifications.models import InboxMessage, Topic
from guahao.testing import make_account
from guahao.web.tests.conftest import sign_in_client

pytestmark = pytest.mark.django_db


def message(account, title: str, *, minutes_ago: int = 0, read: bool = False, link: str = "/me/registrations?tab=booked") -> InboxMessage:
    moment = clock.now() - dt.timedelta(minutes=minutes_ago)
    return InboxMessage.objects.create(
        account=account,
        topic=Topic.BOOKED,
        title=title,
        text=f"就诊人张*丰的{title}通知。",
        link=link,
        created_at=moment,
        read_at=moment if read else None,
    )


def badge(html: str) -> str | None:
    found = re.search(r'data-testid="unread-badge"[^>]*>([^<]+)<', html)
    return found.group(1) if found else None


def test_the_list_shows_the_accounts_messages_newest_first_unread_highlighted(world, account, patient_client):
    message(account, "已读的旧消息", minutes_ago=90, read=True)
    message(account, "预约成功", minutes_ago=5)
    message(make_account(), "别人的消息")
    html = patient_client.get("/me/messages").content.decode()
    assert html.index("预约成功") < html.index("已读的旧消息")
    assert "别人的消息" not in html
    assert html.count('data-testid="message"') == 2 and html.count('data-unread="1"') == 1
    assert "1 条未读" in html and 'data-testid="read-all"' in html


def test_opening_a_message_marks_it_read_and_goes_to_its_page(world, account, patient_client):
    booked = message(account, "预约成功")
    response = patient_client.post(f"/me/messages/{booked.id}/open")
    assert response.status_code == 302 and response["Location"] == "/me/registrations?tab=booked"
    booked.refresh_from_db()
    assert booked.read_at is not None
    assert 'data-unread="1"' not in patient_client.get("/me/messages").content.decode()


def test_a_message_without_a_page_of_ours_returns_to_the_list(world, account, patient_client):
    elsewhere = message(account, "外链", link="https://example.com/phish")
    assert patient_client.post(f"/me/messages/{elsewhere.id}/open")["Location"] == "/me/messages"


def test_read_all_clears_the_unread_marks_and_the_badge(world, account, patient_client):
    message(account, "预约成功", minutes_ago=2)
    message(account, "就诊提醒", minutes_ago=1)
    assert badge(patient_client.get("/").content.decode()) == "2"
    response = patient_client.post("/me/messages/read-all")
    assert response.status_code == 302 and response["Location"] == "/me/messages"
    assert not InboxMessage.objects.filter(account=account, read_at__isnull=True).exists()
    html = patient_client.get("/me/messages").content.decode()
    assert 'data-unread="1"' not in html and 'data-testid="read-all"' not in html
    assert badge(patient_client.get("/").content.decode()) is None


def test_the_home_page_and_other_pages_show_the_unread_count(world, account, patient_client):
    for n in range(3):
        message(account, f"消息{n}", minutes_ago=n)
    message(account, "已读", read=True)
    assert badge(patient_client.get("/").content.decode()) == "3"
    assert badge(patient_client.get("/me/registrations").content.decode()) == "3"


def test_no_badge_when_signed_out(world, client):
    html = client.get("/").content.decode()
    assert 'data-testid="tab-messages"' in html and badge(html) is None


def test_another_accounts_message_is_not_found_and_stays_unread(world, account, patient_client):
    theirs = message(make_account(), "别人的消息")
    response = patient_client.post(f"/me/messages/{theirs.id}/open")
    assert response.status_code == 404 and "消息不存在" in response.content.decode()
    theirs.refresh_from_db()
    assert theirs.read_at is None


def test_a_bad_id_or_cursor_gets_a_chinese_error_page_not_a_server_error(world, account, patient_client):
    huge = patient_client.post("/me/messages/99999999999999999999999/open")
    assert huge.status_code == 404 and "消息不存在" in huge.content.decode()
    forged = patient_client.get("/me/messages?cursor=x")
    assert forged.status_code == 400 and "翻页参数无效" in forged.content.decode()


def test_older_messages_are_a_page_away(world, account, patient_client):
    for n in range(25):
        message(account, f"第{n}条", minutes_ago=n)
    html = patient_client.get("/me/messages").content.decode()
    assert html.count('data-testid="message"') == 20
    cursor = re.search(r'href="\?cursor=([^"]+)"', html).group(1)
    older = patient_client.get(f"/me/messages?cursor={cursor}").content.decode()
    assert older.count('data-testid="message"') == 5 and "第24条" in older and "第0条" not in older


def test_signed_out_visitors_are_sent_to_sign_in(world, client):
    response = client.get("/me/messages")
    assert response.status_code == 302 and response["Location"].startswith("/login?next=")
    other = sign_in_client(client, make_account())
    assert other.get("/me/messages").status_code == 200


@pytest.mark.browser
def test_a_patient_sees_the_badge_opens_a_message_and_lands_on_its_page(phone, site, browser_world, signed_in, account, shot) -> None:
    message(account, "就诊提醒", minutes_ago=30, link="/me/registrations?tab=booked")
    message(account, "预约成功", minutes_ago=60)
    message(account, "已读的旧消息", minutes_ago=600, read=True)
    signed_in(phone, account, next_path="/")
    if "/notices" in phone.url:
        with phone.expect_navigation():
            phone.click("text=我已阅读并同意以上须知")
    phone.goto(f"{site}/")
    assert phone.locator('[data-testid="unread-badge"]').inner_text() == "2"
    with phone.expect_navigation():
        phone.click('[data-testid="tab-messages"]')
    assert phone.locator('[data-unread="1"]').count() == 2
    shot(phone, "messages")
    with phone.expect_navigation():
        phone.locator('[data-testid="message"]', has_text="就诊提醒").click()
    assert phone.url.endswith("/me/registrations?tab=booked")
    assert phone.locator('[data-testid="unread-badge"]').inner_text() == "1"
    phone.goto(f"{site}/me/messages")
    with phone.expect_navigation():
        phone.click('[data-testid="read-all"]')
    assert phone.locator('[data-unread="1"]').count() == 0
    assert phone.locator('[data-testid="unread-badge"]').count() == 0
