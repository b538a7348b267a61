from __future__ import annotations

import pytest

from guahao.catalog import selectors, services
from guahao.catalog.models import Notice, NoticeAck
from guahao.errors import Conflict, NotFound
from guahao.testing import api_client, make_account, make_hospital


@pytest.fixture
def hospital(db):
    hospital = make_hospital()  # has 挂号须知 v1
    Notice.objects.create(hospital=hospital, kind=Notice.Kind.EPIDEMIC, title="防疫须知", body="请佩戴口罩。")
    Notice.objects.create(
        hospital=hospital, kind=Notice.Kind.REGISTRATION, version=0, title="旧须知", body="旧", is_active=True
    )
    return hospital


def test_pending_until_acknowledged_and_again_after_a_new_version(hospital):
    account = make_account()
    pending = selectors.pending_notices(account=account, hospital=hospital)
    assert [(n.kind, n.version) for n in pending] == [("registration", 1), ("epidemic", 1)]

    for notice in pending:
        services.acknowledge_notice(account=account, notice_id=notice.id)
    assert selectors.pending_notices(account=account, hospital=hospital) == []

    new = services.publish_notice(hospital=hospital, kind=Notice.Kind.REGISTRATION, title="挂号须知", body="新规则")
    assert new.version == 2
    assert selectors.pending_notices(account=account, hospital=hospital) == [new]
    # Another account's acknowledgement counts for nobody else.
    assert len(selectors.pending_notices(account=make_account(), hospital=hospital)) == 2


def test_a_notice_that_needs_no_ack_is_never_pending(hospital):
    Notice.objects.filter(hospital=hospital, kind=Notice.Kind.EPIDEMIC).update(requires_ack=False)
    assert [n.kind for n in selectors.pending_notices(account=make_account(), hospital=hospital)] == ["registration"]


def test_acknowledging_twice_keeps_the_first(hospital):
    account = make_account()
    notice = selectors.current_notices(hospital)[0]
    first = services.acknowledge_notice(account=account, notice_id=notice.id)
    second = services.acknowledge_notice(account=account, notice_id=notice.id)
    assert first.pk == second.pk and first.acked_at == second.acked_at
    assert NoticeAck.objects.count() == 1


def test_a_superseded_or_inactive_notice_cannot_be_acknowledged(hospital):
    old = Notice.objects.get(hospital=hospital, version=0)
    with pytest.raises(Conflict) as err:
        services.acknowledge_notice(account=make_account(), notice_id=old.id)
    assert err.value.code == "notice_superseded"
    old.is_active = False
    old.save()
    with pytest.raises(NotFound):
        services.acknowledge_notice(account=make_account(), notice_id=old.id)


def test_notices_over_http(hospital):
    account = make_account()
    me, anonymous = api_client(account), api_client()
    listed = anonymous.get(f"/api/v1/hospitals/{hospital.id}/notices").json()
    assert [(n["kind"], n["title"], n["acknowledged"]) for n in listed] == [
        ("registration", "挂号须知", None),
        ("epidemic", "防疫须知", None),
    ]
    assert set(listed[0]) == {"id", "kind", "kind_label", "title", "body", "version", "requires_ack", "acknowledged"}
    registration = listed[0]["id"]

    assert anonymous.post(f"/api/v1/notices/{registration}/ack").status_code == 401
    first = me.post(f"/api/v1/notices/{registration}/ack")
    again = me.post(f"/api/v1/notices/{registration}/ack")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert first.json()["notice_id"] == registration
    assert first.json()["acked_at"].endswith("+08:00")

    mine = me.get(f"/api/v1/hospitals/{hospital.id}/notices").json()
    assert [n["acknowledged"] for n in mine] == [True, False]
    # A bad token reads like no token: the notices are public.
    stranger = api_client()
    stranger.token = "not-a-token"
    assert [n["acknowledged"] for n in stranger.get(f"/api/v1/hospitals/{hospital.id}/notices").json()] == [None, None]

    missing = me.post("/api/v1/notices/999999/ack")
    assert missing.status_code == 404
    assert missing.json()["code"] == "notice_not_found"
