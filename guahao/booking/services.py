"""Booking: hold a slot, confirm, pay, register, cancel (DESIGN.md §2).

Every write here is one transaction. Calls to the HIS and to payment providers happen outside
transactions, so a slow outside system never holds a database lock.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db import connection, transaction
from django.db.models import Q

from guahao import clock
from guahao.booking import selectors
from guahao.booking.models import Hold, Registration
from guahao.booking.states import (
    HoldState,
    RegistrationStatus,
    check_registration_move,
)
from guahao.catalog.selectors import pending_notices
from guahao.errors import (
    Conflict,
    Forbidden,
    GuahaoError,
    InvalidInput,
    NotFound,
    UpstreamUnavailable,
)
from guahao.his.base import HisRefused, HisTimeout, LockRequest, RegisterRequest
from guahao.his.services import adapter as his
from guahao.notifications.services import emit
from guahao.patients.models import Account
from guahao.patients.selectors import get_patient_for_account
from guahao.payments import services as payments
from guahao.payments.models import Payment, Refund
from guahao.payments.providers.base import PayParams
from guahao.policies.selectors import active_restriction
from guahao.scheduling.models import Session, Slot
from guahao.scheduling.selectors import check_bookable, free_slot_q, get_session, release_rule_for

log = logging.getLogger("guahao.booking")

_CLAIMABLE = (HoldState.HELD, HoldState.PAYING)


def _service_phone_hint(session: Session) -> str:
    phone = session.hospital.service_phone
    return f"；如需帮助请致电医院客服 {phone}" if phone else ""


# --- hold ------------------------------------------------------------------------------------


def _claim_slot_by_id(*, slot_id: int, session_id: int, now: dt.datetime, until: dt.datetime) -> int | None:
    claimed = (
        Slot.objects.filter(free_slot_q(now), id=slot_id, session_id=session_id)
        .update(state=Slot.State.HELD, held_until=until)
    )
    return slot_id if claimed else None


# The free condition spells out scheduling.selectors.free_slot_q in SQL (RETURNING needs raw SQL);
# test_holds covers both paths on expired claims, so the two cannot drift apart unnoticed.
_CLAIM_IN_WINDOW = """
UPDATE scheduling_slot SET state = 'held', held_until = %(until)s
WHERE id = (
    SELECT id FROM scheduling_slot
    WHERE session_id = %(session)s AND window_start = %(window)s
      AND (state = 'free' OR (state = 'held' AND held_until <= %(now)s))
    ORDER BY seq LIMIT 1 {lock}
) AND (state = 'free' OR (state = 'held' AND held_until <= %(now)s))
RETURNING id
"""


def _claim_slot_in_window(*, session_id: int, window: dt.datetime, now: dt.datetime, until: dt.datetime) -> int | None:
    """Claim the first free number in a time window with one statement. On PostgreSQL, SKIP LOCKED
    sends concurrent claimants to different rows instead of queueing them on the same one; SQLite
    has one writer at a time, so the statement is atomic there as it stands."""
    lock = "FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_IN_WINDOW.format(lock=lock),
            {
                "until": connection.ops.adapt_datetimefield_value(until),
                "session": session_id,
                "window": connection.ops.adapt_datetimefield_value(window),
                "now": connection.ops.adapt_datetimefield_value(now),
            },
        )
        row = cursor.fetchone()
    return row[0] if row else None


def hold_slot(
    *,
    account: Account,
    slot_id: int | None = None,
    session_id: int | None = None,
    window_start: dt.datetime | None = None,
) -> Hold:
    """Claim one slot for the account: a given slot, or the first free one in a session's time
    window. Guarantees at most one live hold per slot. A loser of a release burst is answered from
    reads alone (no write transaction); the conditional UPDATE decides between the rest. The HIS
    lock follows; if the HIS refuses or does not answer, the claim is undone."""
    now = clock.now()
    # One light read first: most of a release burst asks for numbers that are already gone, and
    # those requests are answered here, before anything heavier (a number not yet released or in
    # a suspended session is still free, so it goes on to the session checks below).
    if slot_id is not None:
        found = Slot.objects.filter(id=slot_id).values_list("session_id", free_slot_q(now)).first()
        if found is None:
            raise NotFound("号源不存在", code="slot_not_found")
        session_id, free = found
        if not free:
            raise _slot_taken()
    elif session_id is None or window_start is None:
        raise InvalidInput("请提供号源 slot_id，或排班 session_id 与时段开始时间 window_start", code="slot_required")
    elif not Slot.objects.filter(free_slot_q(now), session_id=session_id, window_start=window_start).exists():
        raise _window_refusal(session_id=session_id, window_start=window_start)
    session = get_session(session_id)  # fresh from the database, so its status is current
    rule = check_bookable(session, now=now, status_is_fresh=True)
    until = now + dt.timedelta(minutes=rule.lock_minutes)

    with transaction.atomic():
        if slot_id is not None:
            claimed = _claim_slot_by_id(slot_id=slot_id, session_id=session.id, now=now, until=until)
        else:
            claimed = _claim_slot_in_window(session_id=session.id, window=window_start, now=now, until=until)
        if claimed is None:
            raise _slot_taken() if slot_id is not None else _window_refusal(session_id=session_id, window_start=window_start)
        # A hold that lapsed without a sweeper still says HELD/PAYING: close it so the partial
        # unique index admits the new one.
        Hold.objects.filter(slot_id=claimed, state__in=_CLAIMABLE, expires_at__lte=now).update(
            state=HoldState.EXPIRED, updated_at=now
        )
        _enforce_hold_caps(account=account, rule=rule, now=now)
        hold = Hold.objects.create(
            account=account,
            slot_id=claimed,
            session=session,
            state=HoldState.HELD,
            expires_at=until,
            fee_fen=session.fee_fen,
            created_at=now,
            updated_at=now,
        )
        emit("hold.created", hold_id=hold.id)

    hold.slot = Slot.objects.get(id=claimed)
    hold.session = session
    _lock_in_his(hold=hold)
    return hold


def _slot_taken() -> Conflict:
    return Conflict("该号源已被他人锁定或预约，请选择其他号源", code="slot_taken")


def _window_refusal(*, session_id: int, window_start: dt.datetime) -> GuahaoError:
    if not Slot.objects.filter(session_id=session_id, window_start=window_start).exists():
        return NotFound("该排班没有这个就诊时段", code="window_not_found")
    return Conflict("该时段号源已约满，请选择其他时段", code="window_full")


def _enforce_hold_caps(*, account: Account, rule, now: dt.datetime) -> None:
    """Per-account caps, counted under a lock on the account row so that one account's parallel
    requests cannot slip past them together (SQLite's write lock already serialises)."""
    Account.objects.select_for_update().filter(id=account.id).first()
    live, today = selectors.hold_counts(account=account, now=now)
    if live >= rule.max_live_holds_per_account:
        raise Conflict(
            f"您已有 {rule.max_live_holds_per_account} 个待支付的锁号，请先完成支付或取消后再预约",
            code="live_hold_limit",
        )
    if today >= rule.max_holds_per_day_per_account:
        raise Conflict(
            f"今日锁号次数已达上限（{rule.max_holds_per_day_per_account} 次），请明天再试",
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
    try:
        lock_id = his().lock_slot(request)
    except HisRefused as exc:
        _undo_claim(hold=hold, reason=f"his_refused:{exc.reason}")
        raise Conflict("医院系统显示该号源已不可用，请刷新后重新选择", code="his_refused") from exc
    except HisTimeout as exc:
        _undo_claim(hold=hold, reason="his_timeout")
        # The lock may have succeeded with the reply lost: release it so the HIS slot is not stuck.
        try:
            his().release_slot(his_lock_id="", slot_code=slot.his_code)
        except (HisRefused, HisTimeout):
            log.warning("his release after lock timeout failed", extra={"hold_id": hold.id})
        raise UpstreamUnavailable(
            "医院系统暂时无法响应，请刷新后重试" + _service_phone_hint(session), code="his_timeout"
        ) from exc
    if lock_id:  # the local pool has no HIS lock to remember
        Hold.objects.filter(id=hold.id).update(his_lock_id=lock_id)
        hold.his_lock_id = lock_id


def _undo_claim(*, hold: Hold, reason: str) -> None:
    now = clock.now()
    with transaction.atomic():
        Hold.objects.filter(id=hold.id, state=HoldState.HELD).update(state=HoldState.FAILED, updated_at=now)
        _free_slot(slot_id=hold.slot_id, held_until=hold.expires_at)
        emit("hold.failed", hold_id=hold.id, reason=reason)


def _free_slot(*, slot_id: int, held_until: dt.datetime) -> None:
    """Free a slot this hold still owns (held_until is the claim's token: a later claim differs)."""
    Slot.objects.filter(id=slot_id, state=Slot.State.HELD, held_until=held_until).update(
        state=Slot.State.FREE, held_until=None
    )


def _live_hold(*, account: Account, hold_id: int, now: dt.datetime) -> Hold:
    hold = selectors.get_hold_for_account(account=account, hold_id=hold_id)
    state = selectors.effective_state(hold, now)
    if state == HoldState.EXPIRED:
        raise Conflict("锁号已超时，号源已释放，请重新选择号源", code="hold_expired")
    if state not in _CLAIMABLE:
        raise Conflict(f"锁号单当前状态为「{state.label}」，不能进行此操作", code="hold_state_conflict")
    return hold


def confirm_hold(*, account: Account, hold_id: int, patient_id: int, channel: str, insurance: bool) -> Hold:
    """Attach the visiting patient and payment choice to a live hold. The patient must have
    acknowledged the hospital's current notices and must not be under a booking restriction."""
    now = clock.now()
    hold = _live_hold(account=account, hold_id=hold_id, now=now)
    if channel not in Hold.Channel.values:
        raise InvalidInput("支付渠道（channel）应为 wechat、alipay 或 unionpay", code="invalid_channel")
    patient = get_patient_for_account(account=account, patient_id=patient_id)
    hospital = hold.session.hospital
    pending = pending_notices(account=account, hospital=hospital)
    if pending:
        raise Conflict(
            f"请先阅读并确认《{pending[0].title}》",
            code="notice_not_acknowledged",
            notice_ids=[n.id for n in pending],
        )
    restriction = active_restriction(hospital=hospital, patient_index=patient.id_index, today=clock.today())
    if restriction is not None:
        raise Forbidden(
            f"该就诊人因「{restriction.reason}」被限制预约至 {restriction.until:%Y年%m月%d日}",
            code="patient_restricted",
        )
    if selectors.patient_has_booking_in_session(patient_id=patient.id, session_id=hold.session_id, exclude_hold_id=hold.id):
        raise Conflict("该就诊人已预约本次出诊，请勿重复挂号", code="duplicate_booking")
    with transaction.atomic():
        updated = Hold.objects.filter(id=hold.id, state__in=_CLAIMABLE, expires_at__gt=now).update(
            patient=patient, channel=channel, insurance=insurance, updated_at=now
        )
        if not updated:
            raise Conflict("锁号已超时，号源已释放，请重新选择号源", code="hold_expired")
    return selectors.get_hold_for_account(account=account, hold_id=hold.id)


def pay_hold(*, account: Account, hold_id: int) -> tuple[Payment, PayParams]:
    """Open a payment order for a confirmed, live hold. May be called again after a failed payment
    while the hold lives; the earlier order is closed."""
    now = clock.now()
    hold = _live_hold(account=account, hold_id=hold_id, now=now)
    if hold.patient_id is None or not hold.channel:
        raise Conflict("请先选择就诊人和支付方式", code="hold_not_confirmed")
    payment, params = payments.start_payment(hold=hold)
    with transaction.atomic():
        moved = Hold.objects.filter(id=hold.id, state__in=_CLAIMABLE, expires_at__gt=clock.now()).update(
            state=HoldState.PAYING, updated_at=clock.now()
        )
        if moved:
            emit("hold.paying", hold_id=hold.id, payment_id=payment.id)
    if not moved:
        try:
            payments.close_payment(payment_id=payment.id)
        except UpstreamUnavailable:
            log.warning("closing payment failed; a late payment is refunded when it arrives", extra={"payment_id": payment.id})
        raise Conflict("锁号已超时，号源已释放，请重新选择号源", code="hold_expired")
    return payment, params


def release_hold(*, account: Account, hold_id: int) -> Hold:
    """The patient gives the slot back before paying."""
    now = clock.now()
    hold = _live_hold(account=account, hold_id=hold_id, now=now)
    with transaction.atomic():
        released = Hold.objects.filter(id=hold.id, state__in=_CLAIMABLE, expires_at__gt=now).update(
            state=HoldState.RELEASED, updated_at=now
        )
        if not released:
            raise Conflict("锁号状态已变化，请刷新后查看", code="hold_state_conflict")
        _free_slot(slot_id=hold.slot_id, held_until=hold.expires_at)
        emit("hold.released", hold_id=hold.id)
    _tidy_dead_hold(hold)
    return selectors.get_hold_for_account(account=account, hold_id=hold.id)


def _tidy_dead_hold(hold: Hold) -> None:
    """Close open payment orders and release the HIS lock of a hold that is over. A payment that
    still arrives is refunded by complete_paid_hold."""
    for payment in Payment.objects.filter(hold_id=hold.id, state=Payment.State.CREATED):
        try:
            payments.close_payment(payment_id=payment.id)
        except UpstreamUnavailable:
            log.warning("closing payment failed; a late payment is refunded when it arrives", extra={"payment_id": payment.id})
    if hold.his_lock_id:
        try:
            his().release_slot(his_lock_id=hold.his_lock_id, slot_code=hold.slot.his_code)
        except (HisRefused, HisTimeout):
            # Not retried: the HIS lock was taken with the hold's expires_at and lapses by itself.
            log.warning("his release failed; the HIS lock lapses at its expiry", extra={"hold_id": hold.id})


def expire_holds(*, limit: int = 500) -> int:
    """Sweeper: write EXPIRED on lapsed holds and tidy up after them. Correctness never waits for
    this (a lapsed claim is free in the claim statement itself); it only keeps things neat."""
    now = clock.now()
    lapsed = list(
        Hold.objects.select_related("slot").filter(state__in=_CLAIMABLE, expires_at__lte=now).order_by("id")[:limit]
    )
    done = 0
    for hold in lapsed:
        with transaction.atomic():
            moved = Hold.objects.filter(id=hold.id, state__in=_CLAIMABLE, expires_at__lte=now).update(
                state=HoldState.EXPIRED, updated_at=now
            )
            if moved:
                _free_slot(slot_id=hold.slot_id, held_until=hold.expires_at)
                emit("hold.expired", hold_id=hold.id)
        if moved:
            _tidy_dead_hold(hold)
            done += 1
    return done


# --- paid → registered ----------------------------------------------------------------------------


def _refund_no(payment: Payment) -> str:
    # One full refund per payment at most, whichever path asks for it: the number makes it so.
    return f"RF{payment.out_trade_no}"


def complete_paid_hold(*, payment_id: int) -> None:
    """Turn a paid payment into a registration, or refund it. Idempotent: safe to call again for
    the same payment (inline after the notification, and again from the outbox worker)."""
    payment = Payment.objects.select_related("hold__session__hospital", "hold__slot", "hold__patient").get(id=payment_id)
    if payment.state != Payment.State.PAID:
        return
    hold = payment.hold
    now = clock.now()
    with transaction.atomic():
        won = Hold.objects.filter(
            id=hold.id,
            state__in=_CLAIMABLE,
            expires_at__gt=now,
            payment__isnull=True,
            session__status=Session.Status.OPEN,  # 停诊 while paying: refund, do not register
        ).update(state=HoldState.REGISTERING, payment=payment, updated_at=now)
        if won:
            Slot.objects.filter(id=hold.slot_id).update(state=Slot.State.BOOKED, held_until=None)
            emit("hold.registering", hold_id=hold.id, payment_id=payment.id)
    hold.refresh_from_db()
    if hold.payment_id != payment.id:
        _refund_unused_payment(payment=payment, hold=hold)
        return
    if hold.state == HoldState.REGISTERING:
        _register_in_his(hold=hold, payment=payment)


def _refund_unused_payment(*, payment: Payment, hold: Hold) -> None:
    if selectors.effective_state(hold) == HoldState.EXPIRED:
        reason = "锁号已超时，自动退款"
    elif hold.session.status == Session.Status.SUSPENDED:
        reason = "医生停诊，自动退款"
    else:
        reason = "订单已失效，自动退款"
    with transaction.atomic():
        refund = payments.request_refund(
            payment=payment, amount_fen=payment.amount_fen, reason=reason, refund_no=_refund_no(payment)
        )
    _submit_refund_now(refund)


def _submit_refund_now(refund: Refund) -> None:
    """Try at once; if the provider does not answer, the outbox event already written retries it."""
    try:
        payments.submit_refund(refund_id=refund.id)
    except Exception:  # the refund.requested event retries with back-off; nothing is lost
        log.warning("refund submit deferred to worker", extra={"refund_id": refund.id}, exc_info=True)


def _register_in_his(*, hold: Hold, payment: Payment) -> None:
    patient = hold.patient
    request = RegisterRequest(
        hold_id=hold.id,
        his_lock_id=hold.his_lock_id,
        session_code=hold.session.his_code,
        slot_code=hold.slot.his_code,
        slot_seq=hold.slot.seq,
        patient_name=patient.name,
        id_type=patient.id_type,
        id_number=patient.id_number,
        fee_fen=payment.amount_fen,
        insurance=payment.insurance,
        out_trade_no=payment.out_trade_no,
    )
    try:
        result = his().register(request)
    except HisRefused as exc:
        _fail_registration(hold=hold, payment=payment, reason=exc.reason or "his_refused")
        return
    # HisTimeout propagates: the hold stays REGISTERING and the outbox worker asks again later
    # (registration is idempotent per hold at the HIS).
    now = clock.now()
    with transaction.atomic():
        won = Hold.objects.filter(id=hold.id, state=HoldState.REGISTERING).update(
            state=HoldState.SUCCEEDED, updated_at=now
        )
        if won:
            reg = Registration.objects.create(
                hold=hold,
                account_id=hold.account_id,
                patient_id=hold.patient_id,
                slot_id=hold.slot_id,
                session_id=hold.session_id,
                registration_no=result.registration_no,
                status=RegistrationStatus.BOOKED,
                fee_fen=payment.amount_fen,
                booked_at=now,
            )
            emit("registration.booked", registration_id=reg.id, hold_id=hold.id)


def _fail_registration(*, hold: Hold, payment: Payment, reason: str) -> None:
    now = clock.now()
    with transaction.atomic():
        moved = Hold.objects.filter(id=hold.id, state=HoldState.REGISTERING).update(
            state=HoldState.FAILED, updated_at=now
        )
        if not moved:
            return
        Slot.objects.filter(id=hold.slot_id, state=Slot.State.BOOKED).update(state=Slot.State.FREE)
        refund = payments.request_refund(
            payment=payment, amount_fen=payment.amount_fen, reason="医院挂号失败，自动退款", refund_no=_refund_no(payment)
        )
        emit("hold.failed", hold_id=hold.id, reason=reason)
    _submit_refund_now(refund)


# --- cancel ---------------------------------------------------------------------------------------


def cancel_registration(*, account: Account, registration_id: int, reason: str = "患者取消") -> Registration:
    """Cancel before the hospital's deadline: the HIS cancels, the slot returns to the pool, and a
    full refund starts. The registration is REFUNDING until the provider confirms, then CANCELLED."""
    reg = selectors.get_registration_for_account(account=account, registration_id=registration_id)
    check_registration_move(reg.status, RegistrationStatus.REFUNDING)
    rule = release_rule_for(reg.session)
    deadline = selectors.cancel_deadline(reg, hours=rule.cancel_deadline_hours)
    if clock.now() >= deadline:
        raise Conflict(
            f"已超过线上退号截止时间（{clock.local(deadline):%m月%d日 %H:%M}），请到医院窗口办理",
            code="cancel_deadline_passed",
        )
    try:
        his().cancel_registration(registration_no=reg.registration_no)
    except HisRefused as exc:
        raise Conflict("医院系统不允许取消该挂号，请联系医院客服", code="his_refused") from exc
    except HisTimeout as exc:
        raise UpstreamUnavailable("医院系统暂时无法响应，请稍后重试" + _service_phone_hint(reg.session), code="his_timeout") from exc
    return _start_refund_for_cancellation(registration=reg, reason=reason)


def _start_refund_for_cancellation(*, registration: Registration, reason: str) -> Registration:
    now = clock.now()
    payment = registration.hold.payment
    refund = None
    with transaction.atomic():
        target = RegistrationStatus.REFUNDING if payment else RegistrationStatus.CANCELLED
        moved = Registration.objects.filter(id=registration.id, status=RegistrationStatus.BOOKED).update(
            status=target, cancelled_at=now, cancel_reason=reason[:100]
        )
        if not moved:
            raise Conflict("挂号状态已变化，请刷新后查看", code="registration_state_conflict")
        # The number goes back to the pool for other patients.
        Slot.objects.filter(id=registration.slot_id, state=Slot.State.BOOKED).update(
            state=Slot.State.FREE, held_until=None
        )
        if payment:
            refund = payments.request_refund(
                payment=payment, amount_fen=payment.amount_fen, reason=reason, refund_no=_refund_no(payment)
            )
        emit(f"registration.{target}", registration_id=registration.id)
    if refund is not None:
        _submit_refund_now(refund)
    registration.refresh_from_db()
    return registration


def finish_refund(*, refund_id: int) -> None:
    """A refund succeeded: a REFUNDING registration paid by it becomes CANCELLED. Idempotent."""
    refund = Refund.objects.select_related("payment").get(id=refund_id)
    if refund.state != Refund.State.SUCCEEDED:
        return
    with transaction.atomic():
        reg = Registration.objects.filter(
            Q(hold__payment_id=refund.payment_id), status=RegistrationStatus.REFUNDING
        ).first()
        if reg is None:
            return
        moved = Registration.objects.filter(id=reg.id, status=RegistrationStatus.REFUNDING).update(
            status=RegistrationStatus.CANCELLED
        )
        if moved:
            emit("registration.cancelled", registration_id=reg.id, refund_id=refund.id)


def cancel_for_suspension(*, session_id: int) -> int:
    """停诊: end the session's live holds and cancel its booked registrations with a full refund,
    whatever the cancel deadline. Idempotent; returns how many registrations it cancelled."""
    session = Session.objects.get(id=session_id)
    if session.status != Session.Status.SUSPENDED:
        return 0
    now = clock.now()
    for hold in Hold.objects.select_related("slot").filter(session_id=session_id, state__in=_CLAIMABLE):
        with transaction.atomic():
            ended = Hold.objects.filter(id=hold.id, state__in=_CLAIMABLE).update(
                state=HoldState.FAILED, updated_at=now
            )
            if ended:
                _free_slot(slot_id=hold.slot_id, held_until=hold.expires_at)
                emit("hold.failed", hold_id=hold.id, reason="session_suspended")
        if ended:
            _tidy_dead_hold(hold)
    cancelled = 0
    registrations = Registration.objects.select_related("hold__payment").filter(
        session_id=session_id, status=RegistrationStatus.BOOKED
    )
    for registration in registrations:
        try:
            _start_refund_for_cancellation(registration=registration, reason="医生停诊，自动退号")
            cancelled += 1
        except Conflict:  # cancelled by the patient in the meantime
            continue
    return cancelled
