"""`guahao token --phone …` prints a bearer token and nothing else, so scripts can capture it."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command

from guahao.patients.models import Account
from guahao.testing import ApiClient, make_account

pytestmark = pytest.mark.django_db


def _run(phone: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("token", phone=phone, stdout=out, stderr=err)
    return out.getvalue()


def test_the_command_prints_only_a_token_that_authenticates(capsys) -> None:
    printed = _run("13800138000")

    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\n", printed)
    assert capsys.readouterr().out == ""
    response = ApiClient(token=printed.strip()).get("/api/v1/patients")
    assert response.status_code == 200
    assert Account.objects.get().phone == "13800138000"


def test_the_command_signs_in_to_an_existing_account() -> None:
    account = make_account("13900139000")

    token = _run("139 0013 9000").strip()

    assert ApiClient(token=token).get("/api/v1/patients").status_code == 200
    assert Account.objects.get() == account


def test_the_command_refuses_a_bad_phone() -> None:
    with pytest.raises(CommandError, match="手机号格式不正确"):
        _run("12345")
    assert not Account.objects.exists()
