"""Choosing the HIS adapter: per hospital by its HisConnection (edited in the console), else the
deployment's default (GUAHAO_HIS_ADAPTER)."""

from __future__ import annotations

import datetime as dt
import functools
import threading

from django.conf import settings
from django.utils.module_loading import import_string

from guahao.freshness import FreshCache
from guahao.his.base import HisAdapter, HisRefused, HisTimeout
from guahao.his.models import HisConnection

# name → "module:class"; an adapter is imported only when first used.
ADAPTERS: dict[str, str] = {
    "local_pool": "guahao.his.adapters.local_pool:LocalPoolHis",
}


@functools.cache
def adapter() -> HisAdapter:
    """The deployment's default adapter, for hospitals without a HIS connection of their own."""
    target = ADAPTERS.get(settings.HIS_ADAPTER)
    if target is None:
        raise ValueError(f"unknown GUAHAO_HIS_ADAPTER {settings.HIS_ADAPTER!r}")
    return import_string(target.replace(":", "."))()


class UnavailableHis:
    """A HIS connection switched off in the console (the HIS is down for maintenance): every call
    is "no answer", so nothing is booked or dropped — the worker's jobs wait until it is back on."""

    def __getattr__(self, operation: str):
        def no_answer(*args: object, **kwargs: object):
            raise HisTimeout("connection_disabled")

        return no_answer


# (hospital id) → (connection id, updated_at, adapter): rebuilt when the console saves the row,
# in every process, because the key is read again at most every FRESH_SECONDS (`_keys`).
_cache: dict[int, tuple[int, dt.datetime, HisAdapter]] = {}
_cache_lock = threading.Lock()
_keys: FreshCache[tuple[int, dt.datetime] | None] = FreshCache()


def adapter_for(hospital_id: int | None) -> HisAdapter:
    """The HIS adapter of one hospital: its HisConnection's mode, gateway and secret, or the
    default adapter when it has none."""
    if hospital_id is None:
        return adapter()
    key = _keys.get(
        hospital_id, lambda now: HisConnection.objects.filter(hospital_id=hospital_id).values_list("id", "updated_at").first()
    ).value
    if key is None:
        return adapter()  # looked up at call time, so a test's stand-in for the default applies
    cached = _cache.get(hospital_id)
    if cached is not None and cached[:2] == key:
        return cached[2]
    connection = HisConnection.objects.get(id=key[0])
    built = build_adapter(connection)
    with _cache_lock:
        _cache[hospital_id] = (connection.id, connection.updated_at, built)
    return built


def build_adapter(connection: HisConnection, *, even_if_disabled: bool = False) -> HisAdapter:
    if connection.mode == HisConnection.Mode.LOCAL_POOL:
        from guahao.his.adapters.local_pool import LocalPoolHis

        return LocalPoolHis()
    if not connection.enabled and not even_if_disabled:
        return UnavailableHis()  # type: ignore[return-value]
    from guahao.his.adapters.http import HttpHis

    return HttpHis(
        base_url=connection.base_url,
        hospital_code=connection.hospital_code,
        secret=connection.secret,
        connect_timeout=connection.connect_timeout_seconds,
        read_timeout=connection.read_timeout_seconds,
        has_lock_api=connection.mode == HisConnection.Mode.HIS_LOCK,
    )


# --- the console's 测试连接 ---------------------------------------------------------------------------

_NO_ANSWER_REASONS = {
    "timeout": "HIS 未在超时时间内应答，请检查网关地址、网络与超时设置",
    "connect_error": "无法连接 HIS 网关，请检查网关地址与网络",
    "bad_answer_signature": "HIS 应答的签名校验失败，请核对共享密钥",
    "unreadable_answer": "HIS 应答不符合接口约定（无法解析）",
}


def check_connection(connection: HisConnection) -> tuple[bool, str]:
    """One signed GET /schedule?days=1 with this connection's settings (even while it is switched
    off): (ok, what happened, in words for the console)."""
    if not connection.uses_his:
        return True, "本地号源池模式不连接 HIS，无需测试"
    his = build_adapter(connection, even_if_disabled=True)
    try:
        batch = his.fetch_schedule(days=1)
    except HisRefused as exc:
        if exc.reason == "BAD_SIGNATURE":
            return False, "HIS 拒绝了请求签名（401），请核对医院编码与共享密钥"
        return False, f"HIS 拒绝了请求（{exc.reason}）"
    except HisTimeout as exc:
        reason = str(exc)
        if reason.startswith("http_"):
            return False, f"HIS 返回了接口约定之外的应答（HTTP {reason.removeprefix('http_')}）"
        return False, _NO_ANSWER_REASONS.get(reason, "HIS 没有有效应答")
    finally:
        close = getattr(his, "close", None)
        if close is not None:
            close()
    return True, f"连接正常：HIS 返回 {len(batch.sessions)} 个排班、{len(batch.departments)} 个科室"
