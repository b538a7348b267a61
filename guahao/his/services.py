"""Choosing the HIS adapter by configuration (GUAHAO_HIS_ADAPTER)."""

from __future__ import annotations

import functools

from django.conf import settings
from django.utils.module_loading import import_string

from guahao.his.base import HisAdapter

# name → "module:class"; an adapter is imported only when first used.
ADAPTERS: dict[str, str] = {
    "local_pool": "guahao.his.adapters.local_pool:LocalPoolHis",
}


@functools.cache
def adapter() -> HisAdapter:
    target = ADAPTERS.get(settings.HIS_ADAPTER)
    if target is None:
        raise ValueError(f"unknown GUAHAO_HIS_ADAPTER {settings.HIS_ADAPTER!r}")
    return import_string(target.replace(":", "."))()


def adapter_for(hospital_id: int | None) -> HisAdapter:
    """The HIS adapter of one hospital (its connection settings in the console)."""
    return adapter()
