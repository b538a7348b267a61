"""Admission control for the release burst (放号): a process executes at most ADMISSION_ACTIVE
requests at once; one that finds no free permit within ADMISSION_WAIT_MS is answered 429 at once
with Retry-After and a Chinese message, instead of waiting in a queue until the client times out.

Why permits rather than threads: gunicorn's gthread worker queues accepted connections in front of
its thread pool, where Django cannot see them. `guahao run` therefore starts more threads
(GUAHAO_WEB_THREADS) than there are permits: the spare threads take requests off that queue quickly
and refuse them while every permit is taken. On 2 cores the GIL makes more than a few executing
requests per process add latency, not throughput.

A request that finds every permit taken waits for one (at most ADMISSION_WAIT_MS) only while the
waiting line is shorter than ADMISSION_QUEUE; everyone behind it is refused without waiting, so a
refusal costs a thread well under a millisecond. The line is as long as the spare threads by
default: quick answers (the schedule, the sold-out refusals) pass through it in a few
milliseconds, and only a line of slow requests outlasts the wait.

One client cannot take the permits of everyone else: a client (its bearer token, else its
address) and its network (the /24 or /64 of its address) may each have at most ADMISSION_SHARE
requests holding or waiting for a permit in this process; the next is refused at once, before it
takes a permit or a place in the line. A script firing thousands of holds from one account, one
address or a hundred accounts behind one /24 thus keeps at most that share of the permits busy,
and its extra requests cost a refusal each, not a database round trip. Patients send one request
at a time, so the share never touches them. Loopback peers (a local proxy whose X-Forwarded-For is
not trusted, the tests' own client) are not told apart: they get no share limit.

Exempt: health checks, /metrics, static files and payment providers' notifications (bounded by the
number of payments, not by the crowd, and a refused one only delays a paid order's confirmation)."""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.html import escape
from prometheus_client import Counter

from guahao.limits.clientip import client_ip, network_of

log = logging.getLogger("guahao.admission")

BUSY_CODE = "busy"
BUSY_MESSAGE = "当前访问人数较多，请稍后重试"

_EXEMPT = ("/healthz", "/metrics", "/api/v1/payments/notify/")
WARNING_INTERVAL = 10.0  # seconds between two "shedding load" warnings of one process

REFUSED = Counter(
    "guahao_admission_refused",
    "Requests refused with 429 because the process was busy (admission control), not by a rate limit",
)


class Gate:
    """At most `active` holders at once, and at most ADMISSION_QUEUE more waiting for a permit;
    each key (a client, a network) at most `share` of those holding or waiting."""

    def __init__(self, active: int) -> None:
        self.active = active
        self._permits = threading.BoundedSemaphore(active)
        self._lock = threading.Lock()
        self._waiting = 0
        self._by_key: collections.Counter[str] = collections.Counter()

    def enter(self, wait_seconds: float, keys: tuple[str, ...] = (), share: int = 0) -> bool:
        """Whether the caller got a permit. On True it must call `leave(keys)` with the same keys."""
        if keys and not self._take_share(keys, share):
            return False  # this client or network already has its share running or waiting
        admitted = False
        try:
            if self._permits.acquire(blocking=False):
                admitted = True
                return True
            with self._lock:
                if self._waiting >= settings.ADMISSION_QUEUE:
                    return False  # the line is full: waiting would only delay the same answer
                self._waiting += 1
            try:
                admitted = self._permits.acquire(timeout=wait_seconds)
                return admitted
            finally:
                with self._lock:
                    self._waiting -= 1
        finally:
            if not admitted:
                self._give_back_share(keys)

    def leave(self, keys: tuple[str, ...] = ()) -> None:
        self._permits.release()
        self._give_back_share(keys)

    def leave_share(self, keys: tuple[str, ...]) -> None:
        """The request ends after its permit went back early (`waiting_outside`)."""
        self._give_back_share(keys)

    def _take_share(self, keys: tuple[str, ...], share: int) -> bool:
        with self._lock:
            if share > 0 and any(self._by_key[key] >= share for key in keys):
                return False
            self._by_key.update(keys)
            return True

    def _give_back_share(self, keys: tuple[str, ...]) -> None:
        if not keys:
            return
        with self._lock:
            self._by_key.subtract(keys)
            for key in keys:
                if self._by_key[key] <= 0:
                    del self._by_key[key]  # the table holds only who is in right now


# One gate per process (per permit count, so a test may change the setting): every handler and
# thread of the process shares it.
_gates: dict[int, Gate] = {}
_gates_lock = threading.Lock()


def gate_for(active: int) -> Gate:
    with _gates_lock:
        gate = _gates.get(active)
        if gate is None:
            gate = _gates[active] = Gate(active)
        return gate


# The gate whose permit this thread's request holds, if any (see `waiting_outside`).
_held = threading.local()


def waiting_outside() -> None:
    """The request is about to wait on an outside system (the HIS's lock call, ~20 ms or more):
    give its permit to the next request now. Permits bound the requests using the CPU; one
    waiting on a socket uses none, and the little left after the answer (one UPDATE, the response)
    runs without a permit rather than queueing behind newcomers for one. Its client keeps its
    share until the request ends: a script must not double its share by waiting on the HIS."""
    gate = getattr(_held, "gate", None)
    if gate is not None:
        _held.gate = None
        gate.leave()


class _Shedding:
    """The rate-limited warning: one line per WARNING_INTERVAL per process, with the count since."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._refused = 0

    def refused(self, path: str) -> None:
        log.debug("busy: refused with 429", extra={"path": path})
        now = time.monotonic()
        with self._lock:
            self._refused += 1
            if now - self._last < WARNING_INTERVAL:
                return
            count, self._refused, self._last = self._refused, 0, now
        log.warning(
            "shedding load: every admission permit is taken, answering 429",
            extra={"refused": count, "active": settings.ADMISSION_ACTIVE},
        )


shedding = _Shedding()


def is_exempt(path: str) -> bool:
    static = settings.STATIC_URL or ""  # Django gives a relative STATIC_URL its leading "/"
    served_here = static.startswith("/") and not static.startswith("//")
    return path.startswith(_EXEMPT) or (served_here and path.startswith(static))


def busy_response(request: HttpRequest) -> HttpResponse:
    """The 429: JSON under /api/, a small page elsewhere. Built without the database or templates,
    so a refusal stays cheap when the server is at its busiest."""
    if request.path.startswith("/api/"):
        response = HttpResponse(
            json.dumps({"code": BUSY_CODE, "message": BUSY_MESSAGE}, ensure_ascii=False),
            status=429,
            content_type="application/json; charset=utf-8",
        )
    else:
        response = HttpResponse(_busy_page(), status=429, content_type="text/html; charset=utf-8")
        if request.headers.get("HX-Request"):
            response["HX-Retarget"] = "body"  # like the error page: replace the page, not a fragment
            response["HX-Reswap"] = "innerHTML"
    response["Retry-After"] = str(settings.ADMISSION_RETRY_AFTER)
    response["Cache-Control"] = "no-store"  # a proxy must never serve this answer to the next patient
    return response


def _busy_page() -> str:
    # Same stylesheets as every patient page (no inline style: the CSP forbids it).
    from django.templatetags.static import static

    links = []
    for name in ("vendor/weui/weui.min.css", "web/app.css"):
        try:
            links.append(f'<link rel="stylesheet" href="{escape(static(name))}">')
        except ValueError:  # not collected (a manifest without it): the page reads fine unstyled
            continue
    return (
        '<!doctype html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">\n'
        f"<title>请稍后重试</title>\n{''.join(links)}\n</head>\n"
        '<body class="page">\n<main class="content">\n<section class="panel error" role="alert">\n'
        f'<h1 class="error__title">{BUSY_MESSAGE}</h1>\n'
        "<p>放号时段访问集中，请稍等几秒后刷新。</p>\n"
        '<div class="actions"><a class="weui-btn weui-btn_primary btn" href="">刷新</a></div>\n'
        "</section>\n</main>\n</body>\n</html>\n"
    )


class AdmissionMiddleware:
    """Bounds the requests executing at once in this process (settings.ADMISSION_ACTIVE; 0 = off)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        active = settings.ADMISSION_ACTIVE
        if active <= 0 or is_exempt(request.path):
            return self.get_response(request)
        gate = gate_for(active)
        keys = share_keys(request) if settings.ADMISSION_SHARE > 0 else ()
        if not gate.enter(settings.ADMISSION_WAIT_MS / 1000, keys, settings.ADMISSION_SHARE):
            REFUSED.inc()
            shedding.refused(request.path)
            return busy_response(request)
        _held.gate = gate
        try:
            return self.get_response(request)
        finally:
            if _held.gate is not None:
                _held.gate = None
                gate.leave(keys)
            else:  # the permit went back in waiting_outside(); the share goes back now
                gate.leave_share(keys)


def share_keys(request: HttpRequest) -> tuple[str, ...]:
    """Who a request counts against: its client (bearer token, else address) and its network.
    Kept in this process's memory only; the token as a hash, never as sent."""
    address = client_ip(request)
    try:
        if ipaddress.ip_address(address).is_loopback:
            return ()
    except ValueError:
        return ()
    authorization = request.headers.get("Authorization", "")
    client = (
        "token:" + hashlib.sha256(authorization.encode()).hexdigest()[:32]
        if authorization.lower().startswith("bearer ")
        else "ip:" + address
    )
    return (client, "net:" + network_of(address))
