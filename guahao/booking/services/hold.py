"""Holding a slot and the lock period: hold, confirm, pay, release, expiry and the tidy-up of a
hold that is over."""

from __future__ import annotations

import datetime as dt

from django.db import connection
from django.db.models import Q

from guahao import admission, clock
from guahao.booking import selectors
from guahao.booking.models import Hold
from guahao.booking.services.common import (
    CLAIMABLE,
    free_slot,
    his,
    lock_slot,
    log,
    service_phone_hint,
)
from guahao.booking.services.settle import complete_paid_hold
from guahao.booking.soldout import sold_out
from guahao.booking.states import HoldState, hold_refusal, hold_sources
from guahao.catalog.models import Hospital
from guahao.catalog.selectors import payment_channels_of, pending_notices
from guahao.catalog.visitors import check_visitor
from guahao.db import atomic_retry, release_connection
from guahao.errors import (
    Conflict,
    GuahaoError,
    InvalidInput,
    NotFound,
    UpstreamUnavailable,
)
from guahao.his.adapters.local_pool import LocalPoolHis
from guahao.his.base import HisRefused, HisTimeout, LockRequest
from guahao.his.wire import Code as HisCode
from guahao.notifications.services import emit
from guahao.patients.models import Account
from guahao.patients.selectors import get_patient_for_account, person_indexes
from guahao.payments import selectors as payment_selectors
from guahao.payments import services as payments
from guahao.payments.channels import channel_labels
from guahao.payments.models import Payment
from guahao.payments.providers.base import PayParams
from guahao.policies import engine as policy_engine
from guahao.scheduling.models import Session, Slot
from guahao.scheduling.selectors import (
    booking_cutoff,
    check_bookable,
    check_window_open,
    free_slot_q,
    session_for_booking,
)
from guahao.scheduling.services import lock_session_status

# The conditions spell out scheduling.selectors.bookable_slot_q in SQL (RETURNING needs raw SQL);
# test_holds (expired claims) and test_today_windows (closing windows) cover both statements, so
# they cannot drift apart unnoticed. RETURNING gives the claimed number's facts for the answer and
# the HIS lock without another read.
_BOOKABLE = "window_start > %(cutoff)s AND (state = 'free' OR (state = 'held' AND held_until <= %(now)s))"
_RETURNING = "RETURNING id, seq, window_start, window_end, his_code"

_CLAIM_BY_ID = f"""
UPDATE scheduling_slot SET state = 'held', held_until = %(until)s
WHERE id = %(slot)s AND session_id = %(session)s AND {_BOOKABLE}
{_RETURNING}
"""

_CLAIM_IN_WINDOW = f"""
UPDATE scheduling_slot SET state = 'held', held_until = %(until)s
WHERE id = (
    SELECT id FROM scheduling_slot
    WHERE session_id = %(session)s AND window_start = %(window)s AND {_BOOKABLE}
    ORDER BY seq LIMIT 1 {{lock}}
) AND {_BOOKABLE}
{_RETURNING}
"""


_SLOT_AT = """
SELECT session_id, window_start, (state = 'free' OR (state = 'held' AND held_until <= %(now)s)) AS free
FROM scheduling_slot WHERE id = %(slot)s
"""

# Holds that lapsed without a sweeper on the number just claimed (CLAIMABLE, expired).
_LAPSED = """
SELECT id FROM booking_hold WHERE slot_id = %(slot)s AND state IN ('held', 'paying') AND expires_at <= %(now)s
"""


def _datetime(value: object) -> dt.datetime:
    """A datetime read by raw SQL: PostgreSQL gives an aware one; SQLite a naive one or text,
    which its converter makes aware."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value
    return connection.ops.convert_datetimefield_value(value, None, connection)


def _slot_at(slot_id: int, now: dt.datetime) -> tuple[int, dt.datetime, bool] | None:
    """(session id, window start, free now) of a number, in one light read: the loser's answer."""
    with connection.cursor() as cursor:
        cursor.execute(_SLOT_AT, {"slot": slot_id, "now": connection.ops.adapt_datetimefield_value(now)})
        row = cursor.fetchone()
    return (row[0], _datetime(row[1]), bool(row[2])) if row else None


def _lapsed_holds(slot_id: int, now: dt.datetime) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(_LAPSED, {"slot": slot_id, "now": connection.ops.adapt_datetimefield_value(now)})
        return [row[0] for row in cursor.fetchall()]


def _claim(
    sql: str, *, session_id: int, now: dt.datetime, cutoff: dt.datetime, until: dt.datetime, **more: object
) -> Slot | None:
    """Run one claiming statement: the claimed slot as it now stands, or None."""
    adapt = connection.ops.adapt_datetimefield_value
    params = {"until": adapt(until), "session": session_id, "now": adapt(now), "cutoff": adapt(cutoff)}
    params.update({k: adapt(v) if isinstance(v, dt.datetime) else v for k, v in more.items()})
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    if connection.vendor != "postgresql":
        return Slot.objects.get(id=row[0])  # SQLite answers datetimes as text: the ORM converts them
    slot_id, seq, window_start, window_end, his_code = row
    return Slot(
        id=slot_id, session_id=session_id, seq=seq, window_start=window_start, window_end=window_end,
        his_code=his_code, state=Slot.State.HELD, held_until=until,
    )


def _claim_slot_by_id(
    *, slot_id: int, session_id: int, now: dt.datetime, cutoff: dt.datetime, until: dt.datetime
) -> Slot | None:
    return _claim(_CLAIM_BY_ID, slot=slot_id, session_id=session_id, now=now, cutoff=cutoff, until=until)


def _claim_slot_in_window(
    *, session_id: int, window: dt.datetime, now: dt.datetime, cutoff: dt.datetime, until: dt.datetime
) -> Slot | None:
    """Claim the first free number in a time window with one statement. On PostgreSQL, SKIP LOCKED
    sends concurrent claimants to different rows instead of queueing them on the same one; SQLite
    has one writer at a time, so the statement is atomic there as it stands."""
    lock = "FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    return _claim(
        _CLAIM_IN_WINDOW.format(lock=lock), session_id=session_id, window=window, now=now, cutoff=cutoff, until=until
    )


def hold_slot(
    *,
    account: Account,
    slot_id: int | None = None,
    session_id: int | None = None,
    window_start: dt.datetime | None = None,
) -> Hold:
    """Claim one slot for the account: a given slot, or the first free one in a session's time
    window. Guarantees at most one live hold per slot, none in a session suspended before the
    claim commits (its status is read under the session's shared lock), and none in a time window
    that has started or starts within the rule's book_before_minutes (a condition in the claim's
    own WHERE on the slot row; later windows of a started session stay bookable). A loser of a
    release burst is answered from reads alone (no write transaction); the conditional UPDATE
    decides between the rest. The HIS lock follows; if the HIS refuses or does not answer, the claim is undone and the
    HIS lock released by an outbox job (a timed-out lock may have been taken)."""
    now = clock.now()
    if window_start is not None and window_start.tzinfo is None:
        window_start = window_start.replace(tzinfo=clock.LOCAL_TZ)  # a time without offset is the hospital's
    # Most of a release burst asks for numbers that are already gone. A number this process saw
    # taken within the last second is refused from memory (soldout.py: it can only refuse); the
    # others get one light read, before anything heavier (a number not yet released or in a
    # suspended session is still free, so it goes on to the session checks below).
    if slot_id is not None:
        if sold_out.says_taken(("slot", slot_id)):
            raise _slot_taken()
        found = _slot_at(slot_id, now)
        if found is None:
            raise NotFound("号源不存在", code="slot_not_found")
        session_id, slot_window, free = found
        if not free:
            sold_out.mark(("slot", slot_id))
            raise _slot_taken()
    elif session_id is None or window_start is None:
        raise InvalidInput("请提供号源 slot_id，或排班 session_id 与时段开始时间 window_start", code="slot_required")
    elif sold_out.says_taken(("window", session_id, window_start)):
        raise _window_full()
    elif not Slot.objects.filter(free_slot_q(now), session_id=session_id, window_start=window_start).exists():
        raise _window_refusal(session_id=session_id, window_start=window_start)
    # The session and its rule as of at most FRESH_SECONDS ago; the claim reads the status afresh.
    session, rule = session_for_booking(session_id)
    check_bookable(session, now=now, status_is_fresh=True, rule=rule)
    check_window_open(slot_window if slot_id is not None else window_start, rule=rule, now=now)
    cutoff = booking_cutoff(rule, now)
    until = now + dt.timedelta(minutes=rule.lock_minutes)

    def claim() -> Hold:
        if lock_session_status(session.id) != Session.Status.OPEN:
            raise Conflict("该时段已停诊，请选择其他日期或医生", code="session_suspended")
        if slot_id is not None:
            slot = _claim_slot_by_id(slot_id=slot_id, session_id=session.id, now=now, cutoff=cutoff, until=until)
        else:
            slot = _claim_slot_in_window(session_id=session.id, window=window_start, now=now, cutoff=cutoff, until=until)
        if slot is None:
            raise _slot_taken() if slot_id is not None else _window_refusal(session_id=session.id, window_start=window_start)
        # A hold that lapsed without a sweeper still says HELD/PAYING: close it so the partial
        # unique index admits the new one, and let the outbox tidy up after it.
        for lapsed_id in _lapsed_holds(slot.id, now):
            if Hold.objects.filter(
                id=lapsed_id, state__in=hold_sources(HoldState.EXPIRED, *CLAIMABLE), expires_at__lte=now
            ).update(state=HoldState.EXPIRED, updated_at=now):
                emit("hold.expired", hold_id=lapsed_id)
        _enforce_hold_caps(account=account, rule=rule, now=now)
        hold = Hold.objects.create(
            account=account,
            slot=slot,
            session=session,
            state=HoldState.HELD,
            expires_at=until,
            fee_fen=session.fee_fen,
            created_at=now,
            updated_at=now,
        )
        emit("hold.created", hold_id=hold.id)
        return hold

    hold = atomic_retry(claim)
    _lock_in_his(hold=hold)
    return hold


def _window_full() -> Conflict:
    return Conflict("该时段号源已约满，请选择其他时段", code="window_full")


def _slot_taken() -> Conflict:
    return Conflict("该号源已被他人锁定或预约，请选择其他号源", code="slot_taken")


def _window_refusal(*, session_id: int, window_start: dt.datetime) -> GuahaoError:
    if not Slot.objects.filter(session_id=session_id, window_start=window_start).exists():
        return NotFound("该排班没有这个就诊时段", code="window_not_found")
    sold_out.mark(("window", session_id, window_start))
    return _window_full()


def _enforce_hold_caps(*, account: Account, rule, now: dt.datetime) -> None:
    """Per-account caps (the release rule's), counted under a lock on the account row so that one
    account's parallel requests cannot slip past them together (SQLite's write lock already
    serialises). Each refusal names its limit and when it stops refusing."""
    live, today = selectors.hold_counts(account=account, now=now, lock=True)
    if live >= rule.max_live_holds_per_account:
        first_end = selectors.earliest_live_hold_expiry(account=account, now=now)
        when = (
            f"；最早的一个将于{clock.local(first_end):%H:%M}到期释放"
            if first_end is not None
            else "；正在办理的挂号有结果后即可再锁号"
        )
        raise Conflict(
            f"每个账号最多同时保留{rule.max_live_holds_per_account}个待支付的锁号（同时锁号上限），"
            f"请先完成支付或取消后再预约{when}",
            code="live_hold_limit",
        )
    if today >= rule.max_holds_per_day_per_account:
        tomorrow = clock.local(now).date() + dt.timedelta(days=1)
        raise Conflict(
            f"每个账号每天最多锁号{rule.max_holds_per_day_per_account}次（每日锁号上限），今日已达上限，"
            f"请于{tomorrow:%m月%d日} 0:00 后再试",
            code="daily_hold_limit",
        )


def _lock_in_his(*, hold: Hold) -> None:
    session, slot = hold.session, hold.slot
    request = LockRequest(
        hold_id=hold.id,
        session_code=session.his_code,
        slot_code=slot.his_code,
        slot_seq=slot.seq,
        expires_at=hold.expires_at,
    )
    adapter = his(session.hospital_id)
    if not isinstance(adapter, LocalPoolHis):
        # No pooled connection and no admission permit wait idle on the HIS's answer.
        release_connection()
        admission.waiting_outside()
    try:
        lock_id = adapter.lock_slot(request)
    except HisRefused as exc:
        # Taken at the HIS (the window, the phone): not offered here again until the schedule
        # sync sees it free there.
        _undo_claim(hold=hold, reason=f"his_refused:{exc.reason}", taken_at_his=exc.reason == HisCode.SLOT_TAKEN)
        raise Conflict("医院系统显示该号源已不可用，请刷新后重新选择", code="his_refused") from exc
    except HisTimeout as exc:
        # The lock may have succeeded with the reply lost: hold.failed's tidy-up releases it at the
        # HIS by our hold id, retried until the HIS answers.
        _undo_claim(hold=hold, reason="his_timeout")
        raise UpstreamUnavailable(
            "医院系统暂时无法响应，请刷新后重试" + service_phone_hint(session), code="his_timeout"
        ) from exc
    if lock_id:  # the local pool has no HIS lock to remember
        Hold.objects.filter(id=hold.id).update(his_lock_id=lock_id)
        hold.his_lock_id = lock_id


def _undo_claim(*, hold: Hold, reason: str, taken_at_his: bool = False) -> None:
    now = clock.now()

    def undo() -> None:
        lock_slot(hold.slot_id)
        failed = Hold.objects.filter(id=hold.id, state__in=hold_sources(HoldState.FAILED, HoldState.HELD)).update(
            state=HoldState.FAILED, updated_at=now
        )
        if taken_at_his:
            Slot.objects.filter(id=hold.slot_id, state=Slot.State.HELD, held_until=hold.expires_at).update(
                state=Slot.State.OFFLINE, held_until=None
            )
        else:
            free_slot(slot_id=hold.slot_id, held_until=hold.expires_at)
        if failed:
            emit("hold.failed", hold_id=hold.id, reason=reason)

    atomic_retry(undo)


def _live_hold(*, account: Account, hold_id: int, now: dt.datetime) -> Hold:
    hold = selectors.get_hold_for_account(account=account, hold_id=hold_id)
    state = selectors.effective_state(hold, now)
    if state not in CLAIMABLE:
        raise hold_refusal(state)
    return hold


def _hold_expired() -> Conflict:
    return hold_refusal(HoldState.EXPIRED)


def _refusal_now(hold_id: int, now: dt.datetime) -> Conflict:
    """A conditional update found the hold moved on: tell the patient what it became."""
    return hold_refusal(selectors.effective_state(Hold.objects.get(id=hold_id), now))


def confirm_hold(*, account: Account, hold_id: int, patient_id: int, channel: str, insurance: bool) -> Hold:
    """Attach the visiting patient and payment choice to a live hold. The channel must be one the
    hospital offers (channel_not_offered names those it does). The patient must have acknowledged
    the hospital's current notices, must not be under a booking restriction, must be someone the
    department sees (age, sex), and must stay within the per-person limits of the visit date
    (policies/engine.py; counted under a lock on the person and date). Once a payment order is
    open (PAYING) the visiting patient is fixed; the channel may still change for the next
    order."""
    now = clock.now()
    hold = _live_hold(account=account, hold_id=hold_id, now=now)
    hospital = hold.session.hospital
    _check_channel_offered(hospital, channel)
    patient = get_patient_for_account(account=account, patient_id=patient_id)
    pending = pending_notices(account=account, hospital=hospital)
    if pending:
        raise Conflict(
            f"请先阅读并确认《{pending[0].title}》",
            code="notice_not_acknowledged",
            notice_ids=[n.id for n in pending],
        )
    session = hold.session
    # The person under every index key (current first), so rotating keys hides no booking or ban.
    person = person_indexes(patient)
    policy_engine.check_not_restricted(hospital=hospital, patient_index=person, today=clock.today())
    check_visitor(department=session.department, sex=patient.sex, birth_date=patient.birth_date, visit_date=session.date)
    # The condition on the row itself: any patient while HELD, the same one once PAYING.
    unchanged_patient = Q(state=HoldState.HELD) | Q(state=HoldState.PAYING, patient_id=patient.id)

    def attach() -> int:
        # One confirmation per real person and visit date at a time (by the person, not the
        # record: another account's record of them counts too), so two accounts confirming the
        # same person at once cannot both pass the checks below before either has written.
        policy_engine.lock_person_on_date(patient_index=person[0], day=session.date)
        if selectors.patient_has_booking_in_session(
            patient_index=person, session_id=hold.session_id, exclude_hold_id=hold.id
        ):
            raise Conflict("该就诊人已预约本次出诊，请勿重复挂号", code="duplicate_booking")
        policy_engine.check_daily_limits(
            hospital_id=hospital.id,
            patient_index=person,
            day=session.date,
            department_id=session.department_id,
            department_name=session.department.name,
            exclude_hold_id=hold.id,
            now=now,
        )
        return Hold.objects.filter(unchanged_patient, id=hold.id, expires_at__gt=now).update(
            patient=patient, channel=channel, insurance=insurance, updated_at=now
        )

    updated = atomic_retry(attach)
    if not updated:
        current = Hold.objects.get(id=hold.id)
        if selectors.effective_state(current, now) == HoldState.PAYING:
            raise Conflict(
                "已发起支付，不能更换就诊人；如需更换，请取消本次锁号后重新预约", code="patient_fixed_after_payment"
            )
        raise _hold_expired()
    return selectors.get_hold_for_account(account=account, hold_id=hold.id)


def _check_channel_offered(hospital: Hospital, channel: str) -> None:
    offered = payment_channels_of(hospital)
    if channel not in Hold.Channel.values:
        raise InvalidInput(f"支付方式（channel）应为 {channel_labels(offered)}", code="invalid_channel")
    if channel not in offered:
        raise InvalidInput(
            f"本院暂不支持{Hold.Channel(channel).label}，请选择 {channel_labels(offered)}",
            code="channel_not_offered",
            offered=offered,
        )


def pay_hold(*, account: Account, hold_id: int) -> tuple[Payment, PayParams]:
    """Open a payment order for a confirmed, live hold. May be called again after a failed payment
    while the hold lives (the earlier order is closed first); at most one order is open at a time,
    and none while a payment of this hold is paid but not yet settled."""
    now = clock.now()
    hold = _live_hold(account=account, hold_id=hold_id, now=now)
    if hold.patient_id is None or not hold.channel:
        raise Conflict("请先选择就诊人和支付方式", code="hold_not_confirmed")
    # The hospital may have switched the chosen channel off since the confirmation.
    _check_channel_offered(hold.session.hospital, hold.channel)
    if payment_selectors.paid_awaiting_settlement(hold_id=hold.id):
        raise Conflict("您已完成支付，正在为您办理挂号，请稍后刷新查看", code="payment_already_paid")

    def start_paying() -> int:
        moved = Hold.objects.filter(
            id=hold.id, state__in=hold_sources(HoldState.PAYING, *CLAIMABLE), expires_at__gt=now
        ).update(state=HoldState.PAYING, updated_at=now)
        if moved and hold.state == HoldState.HELD:
            emit("hold.paying", hold_id=hold.id)
        return moved

    if not atomic_retry(start_paying):
        raise _refusal_now(hold.id, now)
    hold.state = HoldState.PAYING
    return payments.start_payment(hold=hold)


def check_payment(*, account: Account, hold_id: int) -> Hold:
    """The patient's "我已支付": ask the provider about the hold's open orders at once and settle a
    paid one exactly as its notification would. Raises UpstreamUnavailable when the provider does
    not answer."""
    hold = selectors.get_hold_for_account(account=account, hold_id=hold_id)
    for payment in payment_selectors.payments_of_hold(hold.id).filter(state=Payment.State.CREATED, opened_at__isnull=False):
        payments.refresh_payment(payment_id=payment.id)
    for payment_id in payment_selectors.paid_unsettled_ids(hold_id=hold.id, winner_id=hold.payment_id):
        complete_paid_hold(payment_id=payment_id)
    return selectors.get_hold_for_account(account=account, hold_id=hold.id)


def release_hold(*, account: Account, hold_id: int) -> Hold:
    """The patient gives the slot back before paying. Open orders are closed and the HIS lock
    released by the outbox (hold.released)."""
    now = clock.now()
    hold = _live_hold(account=account, hold_id=hold_id, now=now)

    def release() -> None:
        lock_slot(hold.slot_id)
        released = Hold.objects.filter(
            id=hold.id, state__in=hold_sources(HoldState.RELEASED, *CLAIMABLE), expires_at__gt=now
        ).update(state=HoldState.RELEASED, updated_at=now)
        if not released:
            raise _refusal_now(hold.id, now)
        free_slot(slot_id=hold.slot_id, held_until=hold.expires_at)
        emit("hold.released", hold_id=hold.id)

    atomic_retry(release)
    tidy_dead_hold(hold_id=hold.id, at_once=True)
    return selectors.get_hold_for_account(account=account, hold_id=hold.id)


def expire_holds(*, limit: int = 500) -> int:
    """Sweeper: write EXPIRED on lapsed holds; the hold.expired event tidies up after them.
    Correctness never waits for this (a lapsed claim is free in the claim statement itself)."""
    now = clock.now()
    lapsed = list(Hold.objects.filter(state__in=CLAIMABLE, expires_at__lte=now).order_by("id")[:limit])
    done = 0
    for hold in lapsed:

        def expire(hold: Hold = hold) -> int:
            lock_slot(hold.slot_id)
            moved = Hold.objects.filter(
                id=hold.id, state__in=hold_sources(HoldState.EXPIRED, *CLAIMABLE), expires_at__lte=now
            ).update(state=HoldState.EXPIRED, updated_at=now)
            if moved:
                free_slot(slot_id=hold.slot_id, held_until=hold.expires_at)
                emit("hold.expired", hold_id=hold.id)
            return moved

        done += atomic_retry(expire)
    return done


def tidy_dead_hold(*, hold_id: int, at_once: bool = False) -> None:
    """Close the open payment orders of a hold that is over and release its HIS lock (named by our
    hold id, so a lock whose reply was lost is released too). The handler of hold.released,
    hold.expired and hold.failed: it raises when the provider or the HIS does not answer, and the
    outbox tries again until it is done. A payment that still arrives is refunded on settlement.
    `at_once`: a head start right after the patient's own request, never raising."""
    hold = Hold.objects.select_related("slot", "session").get(id=hold_id)
    if selectors.effective_state(hold) in (*CLAIMABLE, HoldState.REGISTERING, HoldState.SUCCEEDED):
        return  # not over: nothing to tidy
    try:
        try:
            payments.close_open_orders(hold_id=hold.id)
        except Conflict as exc:
            if exc.code != "payment_already_paid":  # paid meanwhile: settled, then refunded
                raise
        his(hold.session.hospital_id).release_slot(hold_id=hold.id, his_lock_id=hold.his_lock_id, slot_code=hold.slot.his_code)
    except HisRefused as exc:
        log.warning("his refused to release a lock", extra={"hold_id": hold.id, "reason": exc.reason})
    except (HisTimeout, UpstreamUnavailable, Conflict):
        if not at_once:
            raise
        log.warning("tidy-up after a hold deferred to the worker", extra={"hold_id": hold.id})
