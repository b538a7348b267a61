"""Reconciliation (对账): providers' daily bills and hospitals' HIS day lists against our books.

`run_day(day=…)` is what `guahao reconcile` and the daily job call: it downloads each merchant's bill
of the day from its provider, reconciles it, then each HIS-connected hospital's day list. Django is
imported inside: `bills` is pure and used by the payment sandbox, which runs without Django."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guahao.payments.models import ReconciliationRun


def run_day(*, day: dt.date, source: str | None = None, his: bool = True) -> list[ReconciliationRun]:
    """Reconcile every merchant's bill of `day` (or only those of `source`: a provider such as
    "wechatpay", or one merchant such as "wechatpay:3"), then (with `his`) every HIS-connected
    hospital's list. A source that fails (download failed, bill rejected, HIS unreachable) is a
    failed run; the others still run."""
    from guahao.his.base import HisError
    from guahao.payments.providers import all_merchants, for_merchant
    from guahao.payments.providers.base import ProviderError
    from guahao.payments.reconciliation import his as his_day
    from guahao.payments.reconciliation import services

    runs: list[ReconciliationRun] = []
    for merchant in all_merchants():
        name = services.source_of(merchant.provider, merchant.key)
        if source and source not in (name, merchant.provider):
            continue
        try:
            bill = for_merchant(merchant).download_bill(day)
        except ProviderError as exc:
            runs.append(services.record_failure(provider=name, day=day, error=f"账单下载失败：{exc}"))
            continue
        if bill is None:  # no trades there that day: ours of the day are still looked for
            runs.append(services.reconcile(provider=name, day=day, bill_rows=[]))
        else:
            runs.append(
                services.reconcile_bill(
                    provider=name, day=day, bill=bill.data, bill_format=bill.bill_format,
                    hash_type=bill.hash_type, hash_value=bill.hash_value,
                )
            )  # fmt: skip
    if his and (not source or source.startswith("his")):
        for hospital_id in his_day.his_hospital_ids():
            try:
                runs.append(his_day.reconcile_his_day(hospital_id=hospital_id, day=day))
            except HisError as exc:
                error = f"HIS 当日挂号清单获取失败：{exc}" if str(exc) else "HIS 当日挂号清单获取失败"
                runs.append(services.record_failure(provider=his_day.his_source(hospital_id), day=day, error=error))
    return runs
