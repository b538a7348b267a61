"""What operators watch: Prometheus metrics, served at /metrics to the addresses in
GUAHAO_METRICS_ALLOW (everyone else gets 404).

Under gunicorn every worker is its own process: `guahao run` points PROMETHEUS_MULTIPROC_DIR at a
fresh directory before starting them, each process writes its counters there (prometheus_client
reads the variable when it is first imported), and a scrape adds them up with
MultiProcessCollector. The outbox and database gauges are not kept in any process: the scrape
computes them with a few cheap queries (QueueCollector)."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import time
from collections.abc import Iterator

from django.conf import settings
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from guahao import clock
from guahao.limits.clientip import client_ip

# Buckets around what a patient notices: a hold should answer well under a second.
_HTTP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_OUTSIDE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)

HTTP_REQUEST_SECONDS = Histogram(
    "guahao_http_request_seconds",
    "Time to answer a request, by route (the URL pattern, never the raw path), method and status class",
    ["route", "method", "status"],
    buckets=_HTTP_BUCKETS,
)
HOLDS = Counter(
    "guahao_holds",
    "Hold requests answered: outcome is granted or the refusal code (slot_taken, window_full, ...)",
    ["outcome"],
)
HTTP_429 = Counter("guahao_http_429", "Requests refused with 429 (rate limits), by route", ["route"])
OUTSIDE_CALL_SECONDS = Histogram(
    "guahao_outside_call_seconds",
    "Calls to outside systems (his, wechatpay, alipay, wechat, sms), by outcome: ok, error or timeout",
    ["system", "outcome"],
    buckets=_OUTSIDE_BUCKETS,
)

UNMATCHED = "unmatched"  # a path no URL pattern matched (404s): one label, whatever the path


# --- recording -----------------------------------------------------------------------------------


def route_of(request: HttpRequest) -> str:
    """The URL pattern that answered (`/api/v1/holds/<hold_id>`), so ids never become labels."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED
    return "/" + match.route


class RequestMetricsMiddleware:
    """Latency per route. No database, nothing kept: one histogram observation per request."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        status = response.status_code
        route = route_of(request)
        if status == 429 and route == UNMATCHED:
            route = _resolved_route(request.path_info)  # refused by a middleware, before routing
        HTTP_REQUEST_SECONDS.labels(route, request.method or "", f"{status // 100}xx").observe(
            time.perf_counter() - started
        )
        if status == 429:
            HTTP_429.labels(route).inc()
        return response


def _resolved_route(path: str) -> str:
    try:
        match = resolve(path)
    except Resolver404:
        return UNMATCHED
    return "/" + match.route


def count_hold(outcome: str) -> None:
    HOLDS.labels(outcome).inc()


@functools.cache
def _timeout_types() -> tuple[type[BaseException], ...]:
    import httpx
    import requests

    return (TimeoutError, httpx.TimeoutException, requests.exceptions.Timeout)


class Call:
    """One outside call being timed; the caller marks an answer that is a failure (a 5xx)."""

    __slots__ = ("outcome",)

    def __init__(self) -> None:
        self.outcome = "ok"

    def failed(self) -> None:
        self.outcome = "error"


@contextlib.contextmanager
def outside_call(system: str) -> Iterator[Call]:
    """Times one call to an outside system: ok (an answer, a contract's "no" included), error (no
    usable answer, or one the caller marked) or timeout (no answer in time)."""
    started = time.perf_counter()
    call = Call()
    try:
        yield call
    except BaseException as exc:
        call.outcome = "timeout" if isinstance(exc, _timeout_types()) else "error"
        raise
    finally:
        OUTSIDE_CALL_SECONDS.labels(system, call.outcome).observe(time.perf_counter() - started)


# --- computed at scrape time ---------------------------------------------------------------------


class QueueCollector(Collector):
    """The outbox and delivery queues and the database's connections, read when scraped: two or
    three aggregate queries over indexed columns."""

    def collect(self):
        from django.db.models import Count, Min, Q

        from guahao.notifications.models import Delivery, OutboxEvent

        waiting = OutboxEvent.objects.filter(processed_at__isnull=True).aggregate(
            backlog=Count("id", filter=Q(parked_at__isnull=True)),
            parked=Count("id", filter=Q(parked_at__isnull=False)),
            oldest=Min("created_at", filter=Q(parked_at__isnull=True)),
        )
        yield GaugeMetricFamily(
            "guahao_outbox_backlog", "Outbox events not yet processed (parked ones not counted)",
            value=waiting["backlog"],
        )
        age = (clock.now() - waiting["oldest"]).total_seconds() if waiting["oldest"] else 0.0
        yield GaugeMetricFamily(
            "guahao_outbox_oldest_age_seconds", "Age of the oldest unprocessed, unparked outbox event",
            value=max(age, 0.0),
        )
        yield GaugeMetricFamily(
            "guahao_outbox_parked", "Outbox events parked after too many failures (need a person)",
            value=waiting["parked"],
        )
        yield GaugeMetricFamily(
            "guahao_deliveries_pending", "Messages waiting to be sent to WeChat or SMS",
            value=Delivery.objects.filter(state=Delivery.State.PENDING).count(),
        )
        if connection.vendor == "postgresql":  # every process's connections, not just this one's
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
                (in_use,) = cursor.fetchone()
            yield GaugeMetricFamily(
                "guahao_db_connections", "Connections open to the database (all processes)", value=in_use
            )


# --- the endpoint --------------------------------------------------------------------------------


@functools.cache
def _allowed(spec: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in spec if item.strip())


def may_scrape(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(client_ip(request))
    except ValueError:
        return False
    return any(address in network for network in _allowed(tuple(settings.METRICS_ALLOW)))


def registry() -> CollectorRegistry:
    """All processes' metrics in multiprocess mode (a fresh registry, as the library requires),
    this process's otherwise; the queue gauges in both."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        merged.register(QueueCollector())
        return merged
    return _single_process_registry()


@functools.cache
def _single_process_registry() -> CollectorRegistry:
    REGISTRY.register(QueueCollector())
    return REGISTRY


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not may_scrape(request):
        raise Http404  # the same answer as any unknown path: nothing says it exists
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
