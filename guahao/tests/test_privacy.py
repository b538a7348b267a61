"""ID numbers, phones, patients' names and birth dates never rest in clear: not in the database,
not in a log line, not in a response. These tests look at the raw bytes, as an attacker with a dump
would."""

from __future__ import annotations

import logging
import re

import pytest
from django.db import connection

from guahao.conftest import TEST_LOG
from guahao.logs import scrub
from guahao.testing import ApiClient, make_id_number

PHONE = "13655556666"
PATIENT_PHONE = "18977778888"
PATIENT_NAME = "赵六"

# The shapes a phone or an ID number has in clear (boundaries so longer digit runs, such as order
# numbers and timestamps, do not count).
CLEAR_PHONE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
CLEAR_ID = re.compile(r"(?<![0-9A-Za-z])\d{17}[0-9Xx](?![0-9A-Za-z])")


def raw_database_dump() -> str:
    """Every row of every table, as the database stores it (no model field decrypts anything)."""
    lines = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            lines.extend(f"{table}: {row!r}" for row in cursor.fetchall())
    return "\n".join(lines)


@pytest.mark.django_db
def test_database_dump_and_logs_hold_no_clear_phone_or_id_number(caplog):
    id_number = make_id_number("19761103")
    birth_date = "1976-11-03"
    anonymous = ApiClient()
    with caplog.at_level(logging.INFO):
        anonymous.post("/api/v1/auth/sms-code", {"phone": PHONE})
        code = next(r.sms_code for r in caplog.records if hasattr(r, "sms_code"))
        token = anonymous.post("/api/v1/auth/login", {"phone": PHONE, "code": code}).json()["token"]
        me = ApiClient(token=token)
        response = me.post(
            "/api/v1/patients",
            {"name": PATIENT_NAME, "id_type": "resident", "id_number": id_number, "phone": PATIENT_PHONE, "relation": "self"},
        )
        assert response.status_code == 201, response.json()
        listing = me.get("/api/v1/patients").content.decode()
        # A bad request that echoes the input must not echo it in clear either.
        me.post("/api/v1/patients", {"name": PATIENT_NAME, "id_number": id_number[:-1] + "0", "phone": PATIENT_PHONE, "relation": "self"})
        logging.getLogger("guahao.test").info("careless line with %s and %s", id_number, PHONE)

    dump = raw_database_dump()
    for secret in (PHONE, PATIENT_PHONE, id_number, PATIENT_NAME, birth_date, "19761103"):
        assert secret not in dump
        assert secret not in listing
    assert id_number[0] + "*" * 16 + id_number[-1] in listing

    for handler in logging.getLogger().handlers:
        handler.flush()
    log_text = TEST_LOG.read_text(encoding="utf-8")
    for secret in (PHONE, PATIENT_PHONE, id_number):
        assert secret not in log_text
    assert CLEAR_PHONE.search(log_text) is None
    assert CLEAR_ID.search(log_text) is None


def test_scrub_masks_phones_and_id_numbers_but_not_order_numbers():
    assert scrub("call 13800138000 now") == "call 138****8000 now"
    assert scrub("id 11010519491231002X.") == "id 1****************X."
    assert scrub("order GH2611251830123456789") == "order GH2611251830123456789"


@pytest.mark.django_db
def test_database_dump_holds_no_clear_name_or_birth_date_of_any_visiting_patient():
    from guahao.testing import make_account, make_patient

    account = make_account()
    mine = make_patient(account, name="张三丰", id_number=make_id_number("19900307"))
    make_patient(make_account(), name="张三丰", id_number=mine.id_number, relation="parent")

    dump = raw_database_dump()

    assert "张三丰" not in dump
    assert "1990-03-07" not in dump
    assert "19900307" not in dump
