"""The access_token cache every process shares (a row per AppID in the database).

WeChat keeps one valid token per AppID: fetching a new one retires the old (after a short grace),
and the daily number of fetches is limited. So a token is fetched by one process at a time: the
refresh is claimed by a compare-and-set on the row's `version` and `refreshing_until` (a lease, so a
process that dies mid-refresh does not block the others for long); the others wait for the new
version. A token is refreshed 5 minutes before it expires, and when WeChat says it is no longer
valid (services.send_template passes the version it found stale).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Q

from guahao import clock
from guahao.wechat.client import WechatClient, WechatUnavailable
from guahao.wechat.models import AccessToken, OfficialAccount

log = logging.getLogger("guahao.wechat")

REFRESH_EARLY = dt.timedelta(minutes=5)
REFRESH_LEASE = dt.timedelta(seconds=15)
# How long a process waits (real time) for another one's refresh before giving up this send.
WAIT_SECONDS = 10.0
_POLL_SECONDS = 0.05
_NEVER = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Token:
    value: str
    version: int


TIMEOUT_SECONDS = 5.0


def client_for(official: OfficialAccount) -> WechatClient:
    return WechatClient(
        app_id=official.app_id, app_secret=official.app_secret, api_base=official.api_base, timeout=TIMEOUT_SECONDS
    )


def access_token(official: OfficialAccount, *, stale_version: int | None = None) -> Token:
    """A token that is valid for 5 more minutes by our clock. With `stale_version` (WeChat refused
    that version's token), one newer than it."""
    row = _row(official.app_id)
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        now = clock.now()
        if row.token and row.expires_at - REFRESH_EARLY > now and (stale_version is None or row.version > stale_version):
            return Token(row.token, row.version)
        me = secrets.token_hex(16)
        free = Q(refreshing_until__isnull=True) | Q(refreshing_until__lte=now)
        with transaction.atomic():
            won = AccessToken.objects.filter(free, pk=row.pk, version=row.version).update(
                refreshing_until=now + REFRESH_LEASE, refresher=me
            )
        if won:
            return _refresh(official, row, me)
        if time.monotonic() > deadline:
            raise WechatUnavailable("等待其他进程刷新 access_token 超时")
        time.sleep(_POLL_SECONDS)  # another process is fetching: a real wait for its answer
        row = AccessToken.objects.get(pk=row.pk)


def _row(app_id: str) -> AccessToken:
    found = AccessToken.objects.filter(app_id=app_id).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            return AccessToken.objects.create(app_id=app_id, token="", expires_at=_NEVER)
    except IntegrityError:  # another process made it first
        return AccessToken.objects.get(app_id=app_id)


def _refresh(official: OfficialAccount, row: AccessToken, me: str) -> Token:
    try:
        value, expires_in = client_for(official).fetch_access_token()
    except Exception:
        with transaction.atomic():  # let the next caller try at once instead of after the lease
            AccessToken.objects.filter(pk=row.pk, refresher=me).update(refreshing_until=None, refresher="")
        raise
    version = row.version + 1
    with transaction.atomic():
        AccessToken.objects.filter(pk=row.pk, refresher=me, version=row.version).update(
            token=value,
            expires_at=clock.now() + dt.timedelta(seconds=expires_in),
            version=version,
            refreshing_until=None,
            refresher="",
        )
    log.info("access_token refreshed", extra={"app_id": official.app_id, "version": version})
    return Token(value, version)
