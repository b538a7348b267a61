"""The states of a booking and the moves between them (DESIGN.md §2). Plain enums: no database."""

from __future__ import annotations

from django.db import models

from guahao.errors import Conflict


class HoldState(models.TextChoices):
    HELD = "held", "锁号中"
    PAYING = "paying", "支付中"
    REGISTERING = "registering", "挂号中"
    SUCCEEDED = "succeeded", "挂号成功"
    RELEASED = "released", "已取消"
    EXPIRED = "expired", "已超时"
    FAILED = "failed", "挂号失败"


# A live hold owns its slot: at most one per slot (partial unique index on Hold).
LIVE_HOLD_STATES = (HoldState.HELD, HoldState.PAYING, HoldState.REGISTERING)

HOLD_TRANSITIONS: dict[HoldState, frozenset[HoldState]] = {
    HoldState.HELD: frozenset({HoldState.PAYING, HoldState.RELEASED, HoldState.EXPIRED, HoldState.FAILED}),
    HoldState.PAYING: frozenset(
        {HoldState.PAYING, HoldState.REGISTERING, HoldState.RELEASED, HoldState.EXPIRED, HoldState.FAILED}
    ),
    HoldState.REGISTERING: frozenset({HoldState.SUCCEEDED, HoldState.FAILED}),
    HoldState.SUCCEEDED: frozenset(),
    HoldState.RELEASED: frozenset(),
    HoldState.EXPIRED: frozenset(),
    HoldState.FAILED: frozenset(),
}


class RegistrationStatus(models.TextChoices):
    BOOKED = "booked", "预约成功"
    CHECKED_IN = "checked_in", "已取号"
    VISITED = "visited", "已就诊"
    NO_SHOW = "no_show", "爽约"
    REFUNDING = "refunding", "退费中"
    CANCELLED = "cancelled", "已取消"


# A registration in one of these states owns its slot (partial unique index on Registration).
ACTIVE_REGISTRATION_STATES = (
    RegistrationStatus.BOOKED,
    RegistrationStatus.CHECKED_IN,
    RegistrationStatus.VISITED,
    RegistrationStatus.NO_SHOW,
)

REGISTRATION_TRANSITIONS: dict[RegistrationStatus, frozenset[RegistrationStatus]] = {
    RegistrationStatus.BOOKED: frozenset(
        {RegistrationStatus.CHECKED_IN, RegistrationStatus.REFUNDING, RegistrationStatus.NO_SHOW}
    ),
    RegistrationStatus.CHECKED_IN: frozenset({RegistrationStatus.VISITED}),
    RegistrationStatus.VISITED: frozenset(),
    RegistrationStatus.NO_SHOW: frozenset(),
    RegistrationStatus.REFUNDING: frozenset({RegistrationStatus.CANCELLED}),
    RegistrationStatus.CANCELLED: frozenset(),
}


def hold_sources(target: HoldState, *sources: HoldState) -> list[str]:
    """The states a conditional UPDATE to `target` may start from, checked against the table: a
    service that names a move the table does not allow fails at once, in every test that runs it."""
    for source in sources:
        if target not in HOLD_TRANSITIONS[source]:
            raise ValueError(f"hold move {source} → {target} is not in HOLD_TRANSITIONS")
    return [str(s) for s in sources]


def registration_sources(target: RegistrationStatus, *sources: RegistrationStatus) -> list[str]:
    """As hold_sources, for registrations."""
    for source in sources:
        if target not in REGISTRATION_TRANSITIONS[source]:
            raise ValueError(f"registration move {source} → {target} is not in REGISTRATION_TRANSITIONS")
    return [str(s) for s in sources]


# --- what a patient is told when a move is refused ------------------------------------------------

# A hold the patient acts on (confirm, pay, cancel) that is no longer live, by its state.
_HOLD_OVER: dict[HoldState, str] = {
    HoldState.REGISTERING: "您已完成支付，正在为您办理挂号，请稍后刷新查看",
    HoldState.SUCCEEDED: "该号源已挂号成功，请在“我的挂号”中查看",
    HoldState.RELEASED: "该锁号已取消，号源已释放；如需就诊请重新选择号源",
    HoldState.EXPIRED: "锁号已超时，号源已释放，请重新选择号源",
    HoldState.FAILED: "该锁号未能挂号成功，已支付的费用将原路退回；如需就诊请重新选择号源",
}

# A cancel (→ 退费中) the registration's status does not allow, by that status.
_CANCEL_REFUSED: dict[RegistrationStatus, str] = {
    RegistrationStatus.REFUNDING: "该挂号已取消，正在退费，无需重复操作",
    RegistrationStatus.CANCELLED: "该挂号已取消，无需重复操作",
    RegistrationStatus.CHECKED_IN: "该挂号已取号，不能在线取消；如需退号请到医院挂号窗口办理",
    RegistrationStatus.VISITED: "该挂号已就诊，不能取消",
    RegistrationStatus.NO_SHOW: "该挂号已过就诊时间（爽约），不能取消",
}


def hold_refusal(current: str) -> Conflict:
    """Why a patient cannot act on a hold in state `current`, in their words (code
    hold_expired for a lapsed lock, else hold_state_conflict)."""
    state = HoldState(current)
    code = "hold_expired" if state == HoldState.EXPIRED else "hold_state_conflict"
    return Conflict(_HOLD_OVER.get(state, "锁号状态已变化，请刷新后查看"), code=code, current=state.value)


def registration_refusal(current: str, target: RegistrationStatus) -> Conflict:
    """Why a registration in status `current` cannot move to `target`, in the patient's words."""
    status = RegistrationStatus(current)
    if target == RegistrationStatus.REFUNDING and status in _CANCEL_REFUSED:
        message = _CANCEL_REFUSED[status]
    else:
        message = f"该挂号当前为“{status.label}”，不能办理此操作，请刷新后查看"
    return Conflict(message, code="registration_state_conflict", current=status.value)


def check_hold_move(current: str, target: HoldState) -> None:
    if target not in HOLD_TRANSITIONS[HoldState(current)]:
        raise hold_refusal(current)


def check_registration_move(current: str, target: RegistrationStatus) -> None:
    if target not in REGISTRATION_TRANSITIONS[RegistrationStatus(current)]:
        raise registration_refusal(current, target)
