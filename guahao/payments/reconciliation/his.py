"""A hospital's HIS day list against our registrations of that visit day: registered at the HIS
but not here, here but not at the HIS, fee differs. Hospitals without an HIS connection (or on the
local pool, where our registrations are the only record) are skipped."""

from __future__ import annotations

import datetime as dt

from guahao.booking.models import Registration
from guahao.booking.states import ACTIVE_REGISTRATION_STATES
from guahao.his.models import HisConnection
from guahao.his.services import adapter_for
from guahao.payments.models import Discrepancy, ReconciliationRun
from guahao.payments.reconciliation.services import Comparison, Finding, record_comparison

HIS_KINDS = (Discrepancy.Kind.HIS_ONLY, Discrepancy.Kind.OURS_ONLY_HIS, Discrepancy.Kind.FEE_DIFFERS)
CANCELLED_AT_HIS = "cancelled"


def his_source(hospital_id: int) -> str:
    return f"his-{hospital_id}"


def compare_his_day(*, hospital_id: int, day: dt.date) -> Comparison:
    records = [r for r in adapter_for(hospital_id).registrations_of_day(day) if r.status != CANCELLED_AT_HIS]
    ours = {
        r.registration_no: r.fee_fen
        for r in Registration.objects.filter(
            session__hospital_id=hospital_id, session__date=day, status__in=ACTIVE_REGISTRATION_STATES
        )
    }
    result = Comparison(rows=len(records))
    for record in records:
        fee = ours.pop(record.registration_no, None)
        if fee is None:
            result.findings.append(
                Finding(Discrepancy.Kind.HIS_ONLY, record.registration_no, provider_amount_fen=record.fee_fen,
                        hospital_id=hospital_id, detail=f"HIS 有此挂号（{record.status}），本系统没有有效挂号")
            )  # fmt: skip
        elif record.fee_fen is not None and record.fee_fen != fee:
            result.findings.append(
                Finding(Discrepancy.Kind.FEE_DIFFERS, record.registration_no, our_amount_fen=fee,
                        provider_amount_fen=record.fee_fen, hospital_id=hospital_id, detail="挂号费不一致")
            )  # fmt: skip
        else:
            result.matched += 1
    for registration_no, fee in ours.items():
        result.findings.append(
            Finding(Discrepancy.Kind.OURS_ONLY_HIS, registration_no, our_amount_fen=fee, hospital_id=hospital_id,
                    detail="本系统有有效挂号，HIS 没有")
        )  # fmt: skip
    return result


def reconcile_his_day(*, hospital_id: int, day: dt.date) -> ReconciliationRun:
    comparison = compare_his_day(hospital_id=hospital_id, day=day)
    return record_comparison(provider=his_source(hospital_id), day=day, comparison=comparison, kinds=HIS_KINDS)


def his_hospital_ids() -> list[int]:
    return list(
        HisConnection.objects.exclude(mode=HisConnection.Mode.LOCAL_POOL)
        .order_by("hospital_id")
        .values_list("hospital_id", flat=True)
    )
