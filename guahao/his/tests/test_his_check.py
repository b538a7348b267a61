"""`guahao his-check` against the simulator: it passes against a gateway that keeps the contract,
cleans up what it made, and fails naming the operation against one that breaks it."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from guahao.his.conformance import run_checks
from guahao.his.simulator.process import running_simulator


def test_his_check_passes_against_the_simulator_and_leaves_nothing_behind() -> None:
    with running_simulator(hospital="H1", secret="check-secret") as sim:
        out = io.StringIO()
        call_command("his-check", sim.url, hospital="H1", secret="check-secret", stdout=out)
        state = sim.state()
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("his-check: ") and lines[-1].endswith(" 0 failed")
    assert all(line.startswith("✓ ") for line in lines[:-1])
    named = {line.split(":")[0].removeprefix("✓ ") for line in lines[:-1]}
    assert named == {"signature", "schedule", "lock", "release", "register", "query", "cancel", "day", "card"}
    assert [lock for lock in state["locks"] if lock["status"] == "live"] == []
    assert [reg for reg in state["registrations"] if reg["status"] != "cancelled"] == []


@pytest.mark.parametrize(
    ("mode", "operation"),
    [
        ("signature", "signature"),
        ("unsigned", "lock"),
        ("lock-idempotency", "lock"),
        ("release-idempotency", "release"),
        ("register-idempotency", "register"),
        ("query-unknown", "query"),
        ("cancel-idempotency", "cancel"),
        ("day", "day"),
        ("card", "card"),
    ],
)
def test_his_check_fails_naming_the_operation_the_gateway_breaks(mode: str, operation: str) -> None:
    with running_simulator(breaks=(mode,)) as sim:
        failed = [check for check in run_checks(sim.url, hospital=sim.hospital, secret=sim.secret) if not check.passed]
    assert operation in {check.operation for check in failed}
    assert all(check.line().startswith(f"✗ {check.operation}: ") for check in failed)


def test_his_check_exits_1_and_names_the_operation_in_its_summary() -> None:
    with running_simulator(hospital="H1", secret="check-secret", breaks=("register-idempotency",)) as sim:
        out = io.StringIO()
        with pytest.raises(SystemExit) as exited:
            call_command("his-check", sim.url, hospital="H1", secret="check-secret", stdout=out)
    assert exited.value.code == 1
    assert "✗ register: the same hold_id again returns the same registration_no" in out.getvalue()
    assert out.getvalue().splitlines()[-1].endswith("(day, query, register)")


def test_his_check_says_so_when_the_gateway_does_not_answer() -> None:
    with running_simulator() as sim:
        sim.fault("*", "down", times=-1)
        failed = [c for c in run_checks(sim.url, hospital=sim.hospital, secret=sim.secret, timeout=1) if not c.passed]
    assert failed and "no answer" in failed[0].detail
