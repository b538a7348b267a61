"""Schedule sync: the hospital's HIS publishes departments, doctors, sessions and their numbers;
guahao keeps a mirror of them (keyed by the HIS's codes) that patients browse and book from.

What a sync guarantees:
- It asks the HIS only for what changed since the hospital's stored cursor, outside any
  transaction, and stores the new cursor only after the whole batch is applied: a sync that fails
  half-way is simply run again, and applying a batch twice changes nothing the second time.
- Each session is applied in one transaction, with compare-and-set moves on the slot rows: a number
  is made OFFLINE only while it is FREE here, so a number a patient holds or has booked is never
  taken away, whatever the HIS says about it.
- The HIS's numbers that are locked, booked or kept for the window are OFFLINE here (never offered
  online) and keep their HIS codes, so they come back when the HIS frees them again.
- A 停诊 found at the HIS goes through scheduling.services.suspend_session, the console's own
  idempotent action: its session.suspended event cancels, refunds and notifies every booking.
- Undoing a 停诊 is staff's decision (恢复出诊 in the console): sync only reports it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field

from guahao import clock
from guahao.catalog.models import Department, Doctor, Hospital
from guahao.catalog.visitors import visitor_rule_defaults
from guahao.db import atomic_retry
from guahao.his import services as his_services
from guahao.his.base import HisDepartment, HisDoctor, HisError, HisSession, HisSlot
from guahao.his.models import HisConnection, HisSyncState
from guahao.scheduling import services as scheduling
from guahao.scheduling.models import RegistrationType, Session, Slot

log = logging.getLogger("guahao.his.sync")

# How often the worker syncs each hospital that has an HIS.
SYNC_INTERVAL = dt.timedelta(minutes=5)
DEFAULT_SUSPEND_REASON = "医院停诊"
_TITLES = {label: value for value, label in Doctor.Title.choices} | {v: v for v in Doctor.Title.values}


@dataclass
class SyncReport:
    """What one sync changed, in words staff read (one line per change)."""

    hospital: str
    cursor: str = ""
    departments_added: list[str] = field(default_factory=list)
    doctors_added: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    capacity: list[str] = field(default_factory=list)
    suspensions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what staff should look at; not a change
    numbers_updated: int = 0  # numbers taken or freed at the HIS (window bookings and the like)

    @property
    def changed(self) -> bool:
        return bool(
            self.departments_added or self.doctors_added or self.released or self.capacity
            or self.suspensions or self.numbers_updated
        )

    def lines(self) -> list[str]:
        return [
            *(f"新增科室：{x}" for x in self.departments_added),
            *(f"新增医生：{x}" for x in self.doctors_added),
            *(f"新放号：{x}" for x in self.released),
            *(f"号源变化：{x}" for x in self.capacity),
            *(f"停诊：{x}" for x in self.suspensions),
            *(f"请核对：{x}" for x in self.notes),
        ]

    def summary(self) -> str:
        if not self.changed and not self.notes:
            return f"{self.hospital}：排班无变化"
        return (
            f"{self.hospital}：新放号 {len(self.released)} 个排班，号源变化 {len(self.capacity)} 个排班，"
            f"停诊 {len(self.suspensions)} 个排班，号源状态更新 {self.numbers_updated} 个，"
            f"新增科室 {len(self.departments_added)} 个、医生 {len(self.doctors_added)} 名，待核对 {len(self.notes)} 项"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def sync_schedule(*, hospital: Hospital, days: int | None = None) -> SyncReport:
    """Fetch what changed at the hospital's HIS since the stored cursor and apply it to the
    mirror (see the module docstring for what that guarantees). Raises HisError when the HIS does
    not answer or refuses; nothing is stored then, and the next sync asks again."""
    state, _ = HisSyncState.objects.get_or_create(hospital=hospital)
    since = state.cursor
    batch = his_services.adapter_for(hospital.id).fetch_schedule(
        since=since, days=days if days is not None else hospital.schedule_days
    )
    report = SyncReport(hospital=hospital.short_name or hospital.name, cursor=batch.cursor)
    _apply_departments(hospital, batch.departments, report)
    _apply_doctors(hospital, batch.doctors, report)
    for his_session in batch.sessions:
        _apply_session(hospital, his_session, report)
    # Compare-and-set on the cursor: a sync that ran meanwhile and stored a later one keeps it.
    HisSyncState.objects.filter(id=state.id, cursor=since).update(
        cursor=batch.cursor, synced_at=clock.now(), last_report=report.as_dict()
    )
    log.info(
        "schedule synced",
        extra={
            "hospital_id": hospital.id, "released": len(report.released), "capacity_changes": len(report.capacity),
            "suspensions": len(report.suspensions), "numbers_updated": report.numbers_updated, "notes": len(report.notes),
        },
    )
    return report


# --- departments and doctors ---------------------------------------------------------------------


def _apply_departments(hospital: Hospital, departments: tuple[HisDepartment, ...], report: SyncReport) -> None:
    known = {d.code: d for d in Department.objects.filter(hospital=hospital)}
    pending = list(departments)
    # Parents first: a department whose parent is neither known nor in this batch waits a round.
    while pending:
        waiting = []
        for item in pending:
            if item.parent_code and item.parent_code not in known:
                waiting.append(item)
                continue
            known[item.code] = _upsert_department(hospital, item, known.get(item.parent_code or ""), known, report)
        if len(waiting) == len(pending):
            for item in waiting:
                report.notes.append(f"科室 {item.name}（{item.code}）的上级科室 {item.parent_code} 不存在，未同步")
            return
        pending = waiting


def _upsert_department(
    hospital: Hospital, item: HisDepartment, parent: Department | None, known: dict[str, Department], report: SyncReport
) -> Department:
    current = known.get(item.code)
    if current is None:
        department = Department.objects.create(
            hospital=hospital, parent=parent, level=min((parent.level + 1) if parent else 1, 3),
            code=item.code, name=item.name, location=item.location, **visitor_rule_defaults(item.name),
        )
        report.departments_added.append(f"{item.name}（{item.code}）")
        return department
    if (current.name, current.location) != (item.name, item.location or current.location):
        current.name, current.location = item.name, item.location or current.location
        current.save(update_fields=["name", "location"])
    return current


def _apply_doctors(hospital: Hospital, doctors: tuple[HisDoctor, ...], report: SyncReport) -> None:
    departments = {d.code: d for d in Department.objects.filter(hospital=hospital)}
    known = {d.code: d for d in Doctor.objects.filter(hospital=hospital)}
    for item in doctors:
        department = departments.get(item.department_code)
        if department is None:
            report.notes.append(f"医生 {item.name}（{item.code}）的科室 {item.department_code} 不存在，未同步")
            continue
        title = _TITLES.get(item.title, Doctor.Title.RESIDENT)
        current = known.get(item.code)
        if current is None:
            Doctor.objects.create(
                hospital=hospital, department=department, code=item.code, name=item.name,
                title=title, specialty=item.specialty,
            )
            report.doctors_added.append(f"{department.name} {item.name}（{item.code}）")
        elif (current.name, current.department_id, current.title, current.specialty) != (
            item.name, department.id, title, item.specialty
        ):
            current.name, current.department, current.title, current.specialty = item.name, department, title, item.specialty
            current.save(update_fields=["name", "department", "title", "specialty"])


# --- sessions and their numbers -----------------------------------------------------------------


def _label(his_session: HisSession, who: str) -> str:
    period = Session.Period(his_session.period).label if his_session.period in Session.Period.values else his_session.period
    return f"{who} {his_session.date:%m月%d日} {period}（{his_session.code}）"


def _apply_session(hospital: Hospital, item: HisSession, report: SyncReport) -> None:
    local = Session.objects.select_related("department", "doctor").filter(hospital=hospital, his_code=item.code).first()
    if local is None:
        _create_session(hospital, item, report)
        return
    who = local.doctor.name if local.doctor_id else local.department.name
    label = _label(item, who)
    if item.status == Session.Status.SUSPENDED and local.status == Session.Status.OPEN:
        affected = local.registrations.filter(status="booked").count()
        scheduling.suspend_session(session=local, reason=item.suspend_reason or DEFAULT_SUSPEND_REASON)
        report.suspensions.append(
            f"{label}，原因：{item.suspend_reason or DEFAULT_SUSPEND_REASON}，将为 {affected} 位已预约患者退号退费并通知"
        )
    elif item.status == Session.Status.OPEN and local.status == Session.Status.SUSPENDED:
        report.notes.append(f"{label} 在医院系统中为出诊，本站为停诊；如需恢复出诊请在管理后台操作")
    _apply_numbers(local, item, label, report)


def _create_session(hospital: Hospital, item: HisSession, report: SyncReport) -> None:
    department = Department.objects.filter(hospital=hospital, code=item.department_code).first()
    doctor = Doctor.objects.filter(hospital=hospital, code=item.doctor_code).first() if item.doctor_code else None
    if department is None or (item.doctor_code and doctor is None):
        report.notes.append(f"排班 {item.code} 的科室或医生在本站不存在，未同步")
        return
    who = doctor.name if doctor else department.name
    label = _label(item, who)
    if item.period not in Session.Period.values or item.end <= item.start:
        report.notes.append(f"{label} 的时段或起止时间有误，未同步")
        return
    same = Session.objects.filter(date=item.date, period=item.period)
    same = same.filter(doctor=doctor) if doctor else same.filter(department=department, doctor=None)
    if same.exists():
        report.notes.append(f"{label} 与本站已有排班（同一医生、日期、时段）重复，未同步")
        return
    slots = [s for s in item.slots if s.end > s.start]
    suspended = item.status == Session.Status.SUSPENDED

    def create() -> Session:
        registration_type = _registration_type(hospital, item)
        session = Session.objects.create(
            hospital=hospital, department=department, doctor=doctor, registration_type=registration_type,
            his_code=item.code, date=item.date, period=item.period, starts_at=item.start, ends_at=item.end,
            fee_fen=item.fee_fen, capacity=_online_count(slots),
            status=Session.Status.SUSPENDED if suspended else Session.Status.OPEN,
            suspend_reason=(item.suspend_reason or DEFAULT_SUSPEND_REASON)[:100] if suspended else "",
            suspended_at=clock.now() if suspended else None,
            location=item.location or department.location,
        )
        Slot.objects.bulk_create(
            Slot(
                session=session, seq=s.seq, window_start=s.start, window_end=s.end, his_code=s.code,
                state=_mirror_state(s),
            )
            for s in slots
        )
        return session

    atomic_retry(create)
    free = sum(1 for s in slots if s.state == "free")
    if suspended:
        report.notes.append(f"{label} 在医院系统中已停诊，已同步为停诊，未放号")
    else:
        report.released.append(f"{label}，号源 {len(slots)} 个，可预约 {free} 个")


def _registration_type(hospital: Hospital, item: HisSession) -> RegistrationType:
    name = item.registration_type or "普通号"
    found = RegistrationType.objects.filter(hospital=hospital, name=name).first()
    if found is None:
        found, _ = RegistrationType.objects.get_or_create(
            hospital=hospital, code=name[:20], defaults={"name": name[:20], "default_fee_fen": item.fee_fen}
        )
    return found


def _mirror_state(slot: HisSlot) -> str:
    # Anything the HIS does not offer (locked, booked, kept for the window) is never offered online.
    return Slot.State.FREE if slot.state == "free" else Slot.State.OFFLINE


def _online_count(slots: list[HisSlot] | tuple[HisSlot, ...]) -> int:
    return sum(1 for s in slots if s.state != "offline")


def _apply_numbers(session: Session, item: HisSession, label: str, report: SyncReport) -> None:
    """Bring the session's numbers in line with the HIS's list (the contract sends every number of
    a session it sends): new numbers are added, numbers the HIS took or removed become OFFLINE while
    they are FREE here, and numbers it freed again come back. One transaction, queued behind 加号
    on the session row so sequence numbers never collide."""
    his_slots = {s.code: s for s in item.slots if s.end > s.start}
    capacity = _online_count(list(his_slots.values()))

    def apply() -> tuple[int, int, int, int, int]:
        Session.objects.select_for_update(no_key=True).filter(id=session.id).values_list("id", flat=True).first()
        before = Session.objects.values_list("capacity", flat=True).get(id=session.id)
        rows = list(Slot.objects.filter(session_id=session.id))
        local = {s.his_code: s for s in rows if s.his_code not in ("", Slot.OFFLINE_CODE)}
        taken_seqs = {s.seq for s in rows}
        top = max(taken_seqs, default=0)
        added: list[Slot] = []
        updated = removed = kept = 0
        for code, his_slot in his_slots.items():
            mine = local.get(code)
            if mine is None:
                seq = his_slot.seq
                if seq in taken_seqs:  # a local 加号 has this sequence number
                    seq = top + 1
                taken_seqs.add(seq)
                top = max(top, seq)
                added.append(
                    Slot(session_id=session.id, seq=seq, window_start=his_slot.start, window_end=his_slot.end,
                         his_code=code, state=_mirror_state(his_slot))
                )
            elif his_slot.state == "free" and mine.state == Slot.State.OFFLINE:
                updated += Slot.objects.filter(id=mine.id, state=Slot.State.OFFLINE).update(state=Slot.State.FREE)
            elif his_slot.state != "free" and mine.state == Slot.State.FREE:
                updated += Slot.objects.filter(id=mine.id, state=Slot.State.FREE).update(state=Slot.State.OFFLINE)
        for code, mine in local.items():
            if code in his_slots or mine.state == Slot.State.OFFLINE:
                continue
            # Compare-and-set: only a number nobody claimed here goes; a held or booked one stays.
            if Slot.objects.filter(id=mine.id, state=Slot.State.FREE).update(state=Slot.State.OFFLINE):
                removed += 1
            else:
                kept += 1
        Slot.objects.bulk_create(added)
        if capacity != before:
            Session.objects.filter(id=session.id).update(capacity=capacity)
        return before, len(added), updated, removed, kept

    before, added, updated, removed, kept = atomic_retry(apply)
    report.numbers_updated += updated
    if added or removed or capacity != before:
        parts = [f"新增 {added} 个"] if added else []
        parts += [f"收回 {removed} 个"] if removed else []
        # Numbers the HIS dropped that a patient holds or booked here stay theirs.
        parts += [f"{kept} 个已被患者锁定或预约，保留"] if kept else []
        detail = f"（{'，'.join(parts)}）" if parts else ""
        report.capacity.append(f"{label}：线上号源 {before} → {capacity}{detail}")


# --- the periodic sweep ----------------------------------------------------------------------------


def hospitals_with_his() -> list[Hospital]:
    """Active hospitals whose HIS is reached through an enabled connection (not the local pool)."""
    return list(
        Hospital.objects.filter(
            is_active=True, his_connection__enabled=True, his_connection__mode__in=(
                HisConnection.Mode.HIS_LOCK, HisConnection.Mode.HIS_NO_LOCK
            )
        ).order_by("id")
    )


def sync_due_hospitals(*, now: dt.datetime | None = None) -> int:
    """The worker's sweep: sync each hospital with an HIS whose last sync is SYNC_INTERVAL old,
    and refresh today's check-ins and visits. A hospital whose HIS does not answer is tried again
    at the next interval; the others go on. Returns how many hospitals were synced."""
    from guahao.his.attendance import refresh_attendance

    now = now or clock.now()
    done = 0
    for hospital in hospitals_with_his():
        last = HisSyncState.objects.filter(hospital=hospital).values_list("synced_at", flat=True).first()
        if last is not None and now - last < SYNC_INTERVAL:
            continue
        try:
            sync_schedule(hospital=hospital)
            refresh_attendance(hospital=hospital, day=clock.local(now).date())
        except HisError as exc:
            _stamp_attempt(hospital, now)
            log.warning("schedule sync deferred: the HIS did not answer", extra={"hospital_id": hospital.id, "error": str(exc)[:200]})
            continue
        except Exception:  # one hospital's bad data must not stop the others' sync; retried next interval
            _stamp_attempt(hospital, now)
            log.exception("schedule sync failed", extra={"hospital_id": hospital.id})
            continue
        done += 1
    return done




def _stamp_attempt(hospital: Hospital, now: dt.datetime) -> None:
    # A failing HIS is asked once per interval, not on every worker pass.
    HisSyncState.objects.update_or_create(hospital=hospital, defaults={"synced_at": now})
