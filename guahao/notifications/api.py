"""The in-app message list (消息) over HTTP: the signed-in account's own messages only."""

from __future__ import annotations

import datetime as dt

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema

from guahao import clock
from guahao.notifications import inbox, selectors
from guahao.notifications.models import InboxMessage
from guahao.patients.auth import bearer

router = Router(auth=bearer, tags=["消息"])


class MessageOut(Schema):
    id: int
    topic: str
    topic_label: str
    title: str
    text: str
    link: str = Field(description="点击后前往的页面（站内路径），可能为空")
    created_at: dt.datetime
    read: bool
    read_at: dt.datetime | None


class MessageListOut(Schema):
    items: list[MessageOut]
    unread: int = Field(description="未读消息数（全部，不只本页）")
    next_cursor: str | None = Field(description="下一页（更早的消息）的 cursor；没有更多时为 null")


class UnreadOut(Schema):
    unread: int


class ReadAllOut(Schema):
    marked: int = Field(description="本次标为已读的条数")
    unread: int


class PageQuery(Schema):
    cursor: str = Field("", max_length=40, description="上一页返回的 next_cursor；第一页不传")
    limit: int = Field(selectors.PAGE_SIZE, ge=1, le=selectors.MAX_PAGE_SIZE, description="每页条数")


def _out(message: InboxMessage) -> dict:
    return {
        "id": message.id,
        "topic": message.topic,
        "topic_label": message.get_topic_display(),
        "title": message.title,
        "text": message.text,
        "link": message.link,
        # In the hospital's time, like every other time the API gives.
        "created_at": clock.local(message.created_at),
        "read": message.read_at is not None,
        "read_at": clock.local(message.read_at) if message.read_at else None,
    }


@router.get("/messages", response=MessageListOut, summary="我的消息（最新在前，含未读数）")
def list_messages(request: HttpRequest, page: Query[PageQuery]):
    found = selectors.inbox_page(account=request.auth, cursor=page.cursor, limit=page.limit)
    return {
        "items": [_out(m) for m in found.items],
        "unread": selectors.unread_count(request.auth),
        "next_cursor": found.next_cursor,
    }


@router.get("/messages/unread-count", response=UnreadOut, summary="未读消息数")
def unread_count(request: HttpRequest):
    return {"unread": selectors.unread_count(request.auth)}


@router.post("/messages/read-all", response=ReadAllOut, summary="全部标为已读")
def read_all(request: HttpRequest):
    marked = inbox.mark_all_read(account=request.auth)
    return {"marked": marked, "unread": selectors.unread_count(request.auth)}


@router.post("/messages/{message_id}/read", response=MessageOut, summary="标为已读")
def read_message(request: HttpRequest, message_id: int):
    return _out(inbox.mark_read(account=request.auth, message_id=message_id))
