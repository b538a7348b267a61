"""Choosing the HIS adapter by configuration (GUAHAO_HIS_ADAPTER)."""

from __future__ import annotations

import functools
import importlib

from django.conf import settings

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
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)()
