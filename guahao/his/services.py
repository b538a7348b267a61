"""Choosing the HIS adapter by configuration (GUAHAO_HIS_ADAPTER)."""

from __future__ import annotations

import functools

from django.conf import settings

from guahao.his.base import HisAdapter


@functools.cache
def adapter() -> HisAdapter:
    name = settings.HIS_ADAPTER
    if name == "local_pool":
        from guahao.his.adapters.local_pool import LocalPoolHis

        return LocalPoolHis()
    raise ValueError(f"unknown GUAHAO_HIS_ADAPTER {name!r}")
