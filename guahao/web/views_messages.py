"""消息: the signed-in patient's in-app messages. Opening one marks it read and follows its link;
全部已读 marks them all. Reads and writes are the same ones /api/v1/messages uses."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from guahao import clock
from guahao.errors import NotFound
from guahao.notifications import inbox, selectors
from guahao.notifications.models import InboxMessage
from guahao.web.auth import account_required

LIST_PATH = "/me/messages"
# Ids beyond a 64-bit column are nobody's message (and must not reach the database as such).
_MAX_ID = 2**63 - 1


def _message_view(message: InboxMessage) -> dict:
    moment = clock.local(message.created_at)
    today = clock.today()
    return {
        "id": message.id,
        "title": message.title,
        "text": message.text,
        "topic": message.get_topic_display(),
        "when": f"{moment:%H:%M}" if moment.date() == today else f"{moment.month}月{moment.day}日 {moment:%H:%M}",
        "unread": message.read_at is None,
    }


@require_GET
@account_required
def messages(request: HttpRequest) -> HttpResponse:
    page = selectors.inbox_page(account=request.account, cursor=request.GET.get("cursor", ""))
    return render(
        request,
        "web/messages.html",
        {
            "inbox": [_message_view(m) for m in page.items],
            "next_cursor": page.next_cursor,
            "first_page": not request.GET.get("cursor"),
        },
    )


@require_POST
@account_required
def open_message(request: HttpRequest, message_id: int) -> HttpResponse:
    if message_id > _MAX_ID:
        raise NotFound("消息不存在", code="message_not_found")
    message = inbox.mark_read(account=request.account, message_id=message_id)
    return HttpResponseRedirect(_safe_link(request, message.link))


@require_POST
@account_required
def read_all(request: HttpRequest) -> HttpResponse:
    inbox.mark_all_read(account=request.account)
    return HttpResponseRedirect(LIST_PATH)


def _safe_link(request: HttpRequest, link: str) -> str:
    """The message's page on this site, else back to the list."""
    if link.startswith("/") and url_has_allowed_host_and_scheme(link, allowed_hosts={request.get_host()}):
        return link
    return LIST_PATH
