"""Each hospital's HIS connection: chosen per hospital, its secret encrypted and never shown back,
edited by the system administrator of that hospital only, and tested from the console."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection as db
from django.urls import reverse

from guahao.console import roles
from guahao.console.models import AuditEntry
from guahao.console.testing import console_client, make_staff
from guahao.his import services
from guahao.his.adapters.http import HttpHis
from guahao.his.adapters.local_pool import LocalPoolHis
from guahao.his.base import HisTimeout
from guahao.his.models import HisConnection
from guahao.testing import make_hospital

from .gateway import HOSPITAL, SECRET, Answer, Gateway

pytestmark = pytest.mark.django_db


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    g = Gateway()
    yield g
    g.close()


def his_connection(hospital, **fields) -> HisConnection:
    defaults = {
        "mode": HisConnection.Mode.HIS_LOCK,
        "base_url": "http://127.0.0.1:9/his",
        "hospital_code": HOSPITAL,
        "secret": SECRET,
    }
    return HisConnection.objects.create(hospital=hospital, **{**defaults, **fields})


# --- choosing the adapter ------------------------------------------------------------------------


def test_a_hospital_without_a_connection_uses_the_default_adapter(monkeypatch):
    stand_in = object()
    monkeypatch.setattr(services, "adapter", lambda: stand_in)
    assert services.adapter_for(make_hospital().id) is stand_in
    assert services.adapter_for(None) is stand_in


def test_each_hospital_gets_its_own_gateway_rebuilt_when_the_console_saves_it():
    a, b = make_hospital(), make_hospital()
    conn_a = his_connection(a, base_url="http://127.0.0.1:9/a", connect_timeout_seconds=1.5)
    his_connection(b, base_url="http://127.0.0.1:9/b", mode=HisConnection.Mode.HIS_NO_LOCK)
    his_a, his_b = services.adapter_for(a.id), services.adapter_for(b.id)
    assert isinstance(his_a, HttpHis) and his_a.base_url.endswith("/a") and his_a.has_lock_api
    assert isinstance(his_b, HttpHis) and his_b.base_url.endswith("/b") and not his_b.has_lock_api
    assert services.adapter_for(a.id) is his_a  # cached while unchanged
    conn_a.base_url = "http://127.0.0.1:9/a2"
    conn_a.save()
    assert services.adapter_for(a.id).base_url.endswith("/a2")


def test_local_pool_mode_and_a_switched_off_connection():
    hospital = make_hospital()
    conn = his_connection(hospital, mode=HisConnection.Mode.LOCAL_POOL)
    assert isinstance(services.adapter_for(hospital.id), LocalPoolHis)
    conn.mode, conn.enabled = HisConnection.Mode.HIS_LOCK, False
    conn.save()
    with pytest.raises(HisTimeout):  # no call at all: the HIS is down for maintenance
        services.adapter_for(hospital.id).query_registration(hold_id=1)


def test_the_secret_is_encrypted_at_rest():
    conn = his_connection(make_hospital())
    with db.cursor() as cursor:
        cursor.execute("SELECT secret FROM his_hisconnection WHERE id = %s", [conn.id])
        [stored] = cursor.fetchone()
    assert stored and SECRET not in stored
    assert HisConnection.objects.get(id=conn.id).secret == SECRET


# --- the console page ------------------------------------------------------------------------------


def form_data(hospital, **fields) -> dict:
    return {
        "hospital": hospital.id,
        "mode": HisConnection.Mode.HIS_LOCK,
        "base_url": "https://his.example.cn/guahao/v1",
        "hospital_code": "H0571",
        "new_secret": "",
        "connect_timeout_seconds": "3",
        "read_timeout_seconds": "5",
        "enabled": "on",
        **fields,
    }


def test_the_system_administrator_sets_a_secret_that_is_never_shown_back_nor_audited():
    hospital = make_hospital()
    client = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital]))
    add = reverse("admin:his_hisconnection_add")
    refused = client.post(add, form_data(hospital))
    assert refused.status_code == 200 and "必须设置共享密钥" in refused.content.decode()
    assert client.post(add, form_data(hospital, new_secret="a-new-secret-0123456789")).status_code == 302
    conn = HisConnection.objects.get(hospital=hospital)
    assert conn.secret == "a-new-secret-0123456789"

    page = client.get(reverse("admin:his_hisconnection_change", args=[conn.id])).content.decode()
    assert "a-new-secret-0123456789" not in page and "已设置" in page and "留空则不修改" in page
    # An empty secret field keeps the stored secret.
    change = reverse("admin:his_hisconnection_change", args=[conn.id])
    assert client.post(change, form_data(hospital, hospital_code="H0572")).status_code == 302
    conn.refresh_from_db()
    assert (conn.hospital_code, conn.secret) == ("H0572", "a-new-secret-0123456789")
    assert client.post(change, form_data(hospital, hospital_code="H0572", new_secret="rotated-secret-0123456789")).status_code == 302
    conn.refresh_from_db()
    assert conn.secret == "rotated-secret-0123456789"

    rows = AuditEntry.objects.filter(object_type="HIS 连接").order_by("id")
    assert rows.count() == 3
    text = " ".join(f"{r.before} {r.after}" for r in rows)
    assert "secret-0123456789" not in text and "******" in text


def test_other_roles_and_other_hospitals_do_not_reach_the_connection():
    a, b = make_hospital(), make_hospital()
    conn_b = his_connection(b)
    admin_a = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[a]))
    assert admin_a.get(reverse("admin:his_hisconnection_change", args=[conn_b.id])).status_code == 302
    operator = console_client(make_staff(role=roles.OPERATIONS, hospitals=[b]))
    assert operator.get(reverse("admin:his_hisconnection_changelist")).status_code == 403


def test_the_connection_test_reports_ok_or_the_reason_in_chinese(gateway):
    hospital = make_hospital()
    client = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital]))
    conn = his_connection(hospital, base_url=gateway.url, enabled=False)
    changelist = reverse("admin:his_hisconnection_changelist")
    act = {"action": "test_connection", "_selected_action": [conn.id]}

    gateway.answer = lambda seen: Answer(body={"cursor": "1", "departments": [], "doctors": [], "sessions": []})
    page = client.post(changelist, act, follow=True).content.decode()
    assert "连接正常" in page
    assert gateway.seen[0].target == "/schedule?days=1" and gateway.seen[0].signature_ok

    gateway.answer = lambda seen: Answer(status=401, body={"code": "BAD_SIGNATURE", "message": "no"})
    assert "请核对医院编码与共享密钥" in client.post(changelist, act, follow=True).content.decode()
    gateway.answer = lambda seen: Answer(body={"cursor": "1"}, secret="not-ours-at-all-0000")
    assert "签名校验失败" in client.post(changelist, act, follow=True).content.decode()
    entries = AuditEntry.objects.filter(action=AuditEntry.Action.OTHER, hospital_id=hospital.id)
    assert [e.result for e in entries.order_by("id")] == ["success", "failure", "failure"]
