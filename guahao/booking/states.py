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


def check_hold_move(current: str, target: HoldState) -> None:
    if target not in HOLD_TRANSITIONS[HoldState(current)]:
        raise Conflict(
            f"锁号单当前状态为「{HoldState(current).label}」，不能变为「{target.label}」",
            code="hold_state_conflict",
        )


def check_registration_move(current: str, target: RegistrationStatus) -> None:
    if target not in REGISTRATION_TRANSITIONS[RegistrationStatus(current)]:
        raise Conflict(
            f"挂号单当前状态为「{RegistrationStatus(current).label}」，不能变为「{target.label}」",
            code="registration_state_conflict",
        )
