"""Schedule sync from the HIS into guahao's mirror: new sessions are released and bookable, capacity
changes never take a number a patient holds, and a 停诊 found by sync cancels, refunds and notifies
every booking once, however often sync runs."""

from __future__ import annotations

import datetime as dt
import io
from collections import Counter

import pytest
from django.core.management import call_command

from guahao import clock
from guahao.booking import services as booking
from guahao.booking.models import Registration
from guahao.booking.states import RegistrationStatus
from guahao.booking.tests.conftest import ready_to_book, registered
from guahao.catalog.models import Department, Doctor, Hospital
from guahao.errors import Conflict
from guahao.his import services as his_services
from guahao.his import sync
from guahao.his.base import HisDepartment, HisDoctor, HisTimeout
from guahao.his.models import HisConnection, HisSyncState
from guahao.his.simulated import SimulatedHis, make_his_session
from guahao.ledger import find_violations
from guahao.notifications.models import InboxMessage, OutboxEvent
from guahao.payments.models import Refund
from guahao.scheduling.models import Session, Slot
from guahao.testing import make_account, make_hospital, run_worker

pytestmark = pytest.mark.django_db

TOMORROW = dt.timedelta(days=1)


@pytest.fixture
def his(monkeypatch) -> SimulatedHis:
    """The hospital's HIS, for booking (the default adapter) and for sync (the hospital's)."""
    simulated = SimulatedHis()
    monkeypatch.setattr(his_services, "adapter", lambda: simulated)
    monkeypatch.setattr(his_services, "adapter_for", lambda hospital_id: simulated)
    return simulated


@pytest.fixture
def hospital(his) -> Hospital:
    hospital = make_hospital()
    his.publish(
        HisDepartment(code="NK", name="内科"),
        HisDepartment(code="XNK", name="心血管内科", parent_code="NK", location="门诊楼3层"),
        HisDoctor(code="D001", name="李建国", department_code="XNK", title="主任医师"),
    )
    return hospital


def day() -> dt.date:
    return clock.today() + TOMORROW


def publish_session(his: SimulatedHis, code: str = "S1", *, numbers: int = 4, states: dict[int, str] | None = None):
    session = make_his_session(
        code, department_code="XNK", doctor_code="D001", date=day(), numbers=numbers, states=states
    )
    his.publish(session)
    return session


def mirror(code: str = "S1") -> Session:
    return Session.objects.get(his_code=code)


def states_of(session: Session) -> dict[str, str]:
    return dict(session.slots.values_list("his_code", "state"))


def test_new_sessions_are_released_with_the_his_numbers_and_are_bookable(his, hospital):
    publish_session(his, "S1", states={2: "booked", 3: "offline", 4: "locked"})
    report = sync.sync_schedule(hospital=hospital)

    assert [line.split("（")[0] for line in report.departments_added] == ["内科", "心血管内科"]
    assert Department.objects.get(hospital=hospital, code="XNK").parent.code == "NK"
    assert Doctor.objects.get(hospital=hospital, code="D001").get_title_display() == "主任医师"
    assert len(report.released) == 1 and "李建国" in report.released[0] and "可预约 1 个" in report.released[0]
    session = mirror()
    assert (session.fee_fen, session.capacity, session.status) == (2500, 3, Session.Status.OPEN)
    # What the HIS does not offer is never offered online, and keeps its HIS code.
    assert states_of(session) == {"S1-1": "free", "S1-2": "offline", "S1-3": "offline", "S1-4": "offline"}

    account = make_account()
    ready_to_book(account, hospital)
    hold = booking.hold_slot(account=account, slot_id=session.slots.get(seq=1).id)
    assert ("lock_slot", hold.id) in his.calls
    with pytest.raises(Conflict):
        booking.hold_slot(account=make_account(), slot_id=session.slots.get(seq=2).id)
    assert find_violations() == []


def test_sync_run_twice_changes_nothing_the_second_time(his, hospital):
    publish_session(his, "S1")
    assert sync.sync_schedule(hospital=hospital).changed
    again = sync.sync_schedule(hospital=hospital)
    assert not again.changed and again.lines() == []
    # Even the whole batch applied again (a cursor lost) changes nothing.
    HisSyncState.objects.filter(hospital=hospital).update(cursor="")
    replayed = sync.sync_schedule(hospital=hospital)
    assert not replayed.changed
    assert Session.objects.filter(his_code="S1").count() == 1 and mirror().slots.count() == 4


def test_a_capacity_change_adds_numbers_and_never_takes_one_a_patient_holds(his, hospital):
    his_session = publish_session(his, "S1", numbers=4)
    sync.sync_schedule(hospital=hospital)
    account = make_account()
    ready_to_book(account, hospital)
    held = booking.hold_slot(account=account, slot_id=mirror().slots.get(seq=4).id)

    # The HIS drops numbers 3 and 4 and adds two in a new window.
    extra = make_his_session("S1", department_code="XNK", doctor_code="D001", date=day(), numbers=6).slots[4:]
    his.change_session("S1", slots=(*his_session.slots[:2], *extra))
    report = sync.sync_schedule(hospital=hospital)

    assert report.capacity == [
        f"李建国 {day():%m月%d日} 上午（S1）：线上号源 4 → 4（新增 2 个，收回 1 个，1 个已被患者锁定或预约，保留）"
    ]
    session = mirror()
    assert states_of(session) == {
        "S1-1": "free", "S1-2": "free", "S1-3": "offline", "S1-4": "held", "S1-5": "free", "S1-6": "free",
    }
    held.refresh_from_db()
    assert held.state == "held"

    # A number taken at the window goes offline here, and comes back when the HIS frees it.
    his.set_slot_state("S1", "S1-5", "booked")
    taken = sync.sync_schedule(hospital=hospital)
    assert taken.numbers_updated == 1 and taken.capacity == []
    assert mirror().slots.get(his_code="S1-5").state == Slot.State.OFFLINE
    his.set_slot_state("S1", "S1-5", "free")
    sync.sync_schedule(hospital=hospital)
    assert mirror().slots.get(his_code="S1-5").state == Slot.State.FREE
    assert find_violations() == []


def test_a_suspension_found_by_sync_cancels_refunds_and_notifies_all_30_bookings_once(his, hospital):
    publish_session(his, "S30", numbers=30)
    sync.sync_schedule(hospital=hospital)
    session = mirror("S30")
    registrations = []
    for seq in range(1, 31):
        account = make_account()
        patient = ready_to_book(account, hospital, name="王小明")
        registrations.append(registered(account, patient, session, seq=seq))
    assert {r.status for r in registrations} == {RegistrationStatus.BOOKED}
    his.change_session("S30", status="suspended", suspend_reason="医生外出会诊")
    report = sync.sync_schedule(hospital=hospital)
    assert len(report.suspensions) == 1 and "将为 30 位已预约患者退号退费并通知" in report.suspensions[0]
    run_worker()
    # Sync again, and again with the whole batch replayed, with the worker between.
    assert sync.sync_schedule(hospital=hospital).suspensions == []
    HisSyncState.objects.filter(hospital=hospital).update(cursor="")
    assert sync.sync_schedule(hospital=hospital).suspensions == []
    run_worker()

    session.refresh_from_db()
    assert session.status == Session.Status.SUSPENDED and session.suspend_reason == "医生外出会诊"
    assert set(Registration.objects.filter(session=session).values_list("status", flat=True)) == {"cancelled"}
    refunds = Refund.objects.filter(payment__hold__session=session)
    assert refunds.count() == 30 and {r.state for r in refunds} == {Refund.State.SUCCEEDED}
    assert len({r.payment_id for r in refunds}) == 30
    topics = Counter(OutboxEvent.objects.values_list("topic", flat=True))
    assert topics["session.suspended"] == 1
    assert topics["registration.refunding"] == 30 and topics["registration.cancelled"] == 30
    sent = list(
        InboxMessage.objects.filter(account__registrations__session=session)
        .exclude(topic="registration.booked")
        .values_list("account_id", "title")
    )
    assert Counter(title for _, title in sent) == {"停诊通知": 30, "已取消": 30}
    assert len({account for account, title in sent if title == "已取消"}) == 30
    assert his.active_registrations() == set()
    assert find_violations() == []


def test_a_failed_fetch_stores_nothing_and_the_next_sync_asks_again(his, hospital):
    publish_session(his, "S1")
    his.fail_next("fetch_schedule", "timeout")
    with pytest.raises(HisTimeout):
        sync.sync_schedule(hospital=hospital)
    assert not Session.objects.filter(his_code="S1").exists()
    assert not HisSyncState.objects.filter(hospital=hospital).exclude(cursor="").exists()
    assert len(sync.sync_schedule(hospital=hospital).released) == 1


def test_his_sync_command_prints_each_change_and_a_summary_in_chinese(his, hospital):
    publish_session(his, "S1")
    out = io.StringIO()
    call_command("his-sync", hospital=hospital.code, stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].strip().startswith("新增科室：内科")
    assert any(line.strip().startswith("新放号：李建国") for line in lines)
    assert lines[-1].startswith(f"{hospital.name}：新放号 1 个排班")

    out = io.StringIO()
    call_command("his-sync", hospital=hospital.code, stdout=out)
    assert out.getvalue().strip() == f"{hospital.name}：排班无变化"

    his.fail_next("fetch_schedule", "timeout")
    with pytest.raises(SystemExit) as exited:
        call_command("his-sync", hospital=hospital.code, stdout=io.StringIO())
    assert exited.value.code == 1


def test_the_worker_syncs_each_connected_hospital_every_few_minutes(his, hospital):
    HisConnection.objects.create(
        hospital=hospital, mode=HisConnection.Mode.HIS_LOCK, base_url="http://127.0.0.1:9/guahao/v1",
        hospital_code=hospital.code, secret="s3cret-for-tests",
    )
    make_hospital()  # no HIS: never synced
    publish_session(his, "S1")
    assert sync.sync_due_hospitals() == 1
    assert Session.objects.filter(his_code="S1").exists()
    assert sync.sync_due_hospitals() == 0  # synced a moment ago
    with clock.travel(sync.SYNC_INTERVAL):
        assert sync.sync_due_hospitals() == 1


def test_sync_against_the_simulator_process_releases_changes_and_suspends():
    from guahao.booking.models import Hold
    from guahao.his.simulator.process import running_simulator

    hospital = make_hospital()  # reached through its connection: the real HTTP adapter
    secret = "simulator-shared-secret-01"
    with running_simulator(hospital=hospital.code, secret=secret, days=3) as sim:
        HisConnection.objects.create(
            hospital=hospital, mode=HisConnection.Mode.HIS_LOCK, base_url=sim.url, hospital_code=sim.hospital, secret=secret
        )
        first = sync.sync_schedule(hospital=hospital, days=3)
        assert first.released and Session.objects.filter(hospital=hospital).count() == len(first.released)
        assert not sync.sync_schedule(hospital=hospital, days=3).changed

        added = sim.add_session(department_code="NK01", doctor_code="DR001", period="evening", numbers=6)
        report = sync.sync_schedule(hospital=hospital, days=3)
        assert len(report.released) == 1 and "王建国" in report.released[0]
        session = mirror(added["code"])
        account = make_account()
        ready_to_book(account, hospital)
        hold = booking.hold_slot(account=account, slot_id=session.slots.get(seq=1).id)  # locked at the HIS

        sim.capacity(added["code"], add=2)
        report = sync.sync_schedule(hospital=hospital, days=3)
        assert [line.split("：", 1)[1] for line in report.capacity] == ["线上号源 6 → 8（新增 2 个）"]
        assert session.slots.filter(state=Slot.State.FREE).count() == 7

        sim.suspend(added["code"], "医生外出会诊")
        report = sync.sync_schedule(hospital=hospital, days=3)
        assert len(report.suspensions) == 1
        run_worker()
        assert Hold.objects.get(id=hold.id).state == "failed"
        assert mirror(added["code"]).status == Session.Status.SUSPENDED
        assert not sync.sync_schedule(hospital=hospital, days=3).changed
    assert find_violations() == []
