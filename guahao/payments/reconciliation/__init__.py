"""Reconciliation (对账): providers' daily bills and hospitals' HIS day lists against our books.

`run_day(day=…)` is what `guahao reconcile` and the daily job call: it fetches each provider's bill
(only the sandbox serves one so far), reconciles it, then each HIS-connected hospital's day list."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guahao.payments.models import ReconciliationRun

BILL_FORMATS = {"sandbox": "wechat", "wechat": "wechat", "alipay": "alipay"}


def run_day(*, day: dt.date, provider: str = "sandbox", his: bool = True) -> list[ReconciliationRun]:
    """Reconcile `provider`'s bill of `day`, then (with `his`) every HIS-connected hospital's list.
    A source that fails (bill rejected, HIS unreachable) is a failed run; the others still run."""
    from guahao.his.base import HisError
    from guahao.payments.reconciliation import his as his_day
    from guahao.payments.reconciliation import services
    from guahao.payments.reconciliation.sandbox import sandbox_bill

    runs: list[ReconciliationRun] = []
    if provider == "sandbox":
        bill, sha1 = sandbox_bill(day)
        runs.append(
            services.reconcile_bill(
                provider=provider, day=day, bill=bill, bill_format="wechat", hash_type="SHA1", hash_value=sha1
            )
        )
    else:
        runs.append(services.record_failure(provider=provider, day=day, error=f"尚未接入 {provider} 的账单下载"))
    if his:
        for hospital_id in his_day.his_hospital_ids():
            try:
                runs.append(his_day.reconcile_his_day(hospital_id=hospital_id, day=day))
            except HisError as exc:
                error = f"HIS 当日挂号清单获取失败：{exc}" if str(exc) else "HIS 当日挂号清单获取失败"
                runs.append(services.record_failure(provider=his_day.his_source(hospital_id), day=day, error=error))
    return runs
