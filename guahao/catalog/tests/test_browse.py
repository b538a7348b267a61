from __future__ import annotations

import pytest

from guahao.catalog import selectors
from guahao.testing import api_client, make_department, make_doctor, make_hospital


@pytest.fixture
def tree(db):
    hospital = make_hospital(name="示范医院", grade="三级甲等", browse_level=2)
    internal = make_department(hospital, name="内科")
    cardiology = make_department(hospital, name="心血管内科", parent=internal)
    hypertension = make_department(hospital, name="高血压专病门诊", parent=cardiology)
    closed = make_department(hospital, name="停用科室", parent=internal)
    closed.is_active = False
    closed.save()
    dermatology = make_department(hospital, name="皮肤科")
    return hospital, internal, cardiology, hypertension, dermatology


def _names(nodes) -> list:
    return [(n["name"], n["bookable"], _names(n["children"])) for n in nodes]


def test_the_tree_stops_at_the_browse_level(tree):
    hospital = tree[0]
    body = api_client().get(f"/api/v1/hospitals/{hospital.id}/departments").json()
    assert set(body[0]) == {"id", "name", "level", "intro", "location", "bookable", "children"}
    # 高血压专病门诊 (level 3) is below the browse level; a leaf above it (皮肤科) is bookable.
    assert _names(body) == [
        ("内科", False, [("心血管内科", True, [])]),
        ("皮肤科", True, []),
    ]


def test_browse_level_one_and_three(tree):
    hospital = tree[0]
    hospital.browse_level = 1
    hospital.save()
    assert [(n.name, n.bookable, n.children) for n in selectors.department_tree(hospital)] == [
        ("内科", True, []),
        ("皮肤科", True, []),
    ]
    hospital.browse_level = 3
    hospital.save()
    nodes = selectors.department_tree(hospital)
    cardiology = nodes[0].children[0]
    assert (cardiology.bookable, [(c.name, c.bookable, c.level) for c in cardiology.children]) == (
        False,
        [("高血压专病门诊", True, 3)],
    )


def test_hospitals_lists_only_active_ones(tree):
    hidden = make_hospital(name="停用医院")
    hidden.is_active = False
    hidden.save()
    body = api_client().get("/api/v1/hospitals").json()
    assert [h["name"] for h in body] == ["示范医院"]
    assert set(body[0]) == {
        "id", "code", "name", "grade", "address", "service_phone", "browse_level", "payment_channels"
    }
    assert api_client().get(f"/api/v1/hospitals/{hidden.id}/departments").status_code == 404


def test_doctors_of_a_department_include_its_sub_departments(tree):
    hospital, internal, cardiology, hypertension, dermatology = tree
    chen = make_doctor(cardiology, name="陈建国")
    wu = make_doctor(hypertension, name="吴海涛")
    make_doctor(dermatology, name="曹雪")
    client = api_client()
    everyone = client.get(f"/api/v1/hospitals/{hospital.id}/doctors").json()
    assert [d["name"] for d in everyone] == ["陈建国", "吴海涛", "曹雪"]
    cardio = client.get(f"/api/v1/hospitals/{hospital.id}/doctors", department_id=cardiology.id).json()
    assert [(d["id"], d["department"]["name"]) for d in cardio] == [(chen.id, "心血管内科"), (wu.id, "高血压专病门诊")]
    assert cardio[0]["title"] == "chief" and cardio[0]["title_label"] == "主任医师"


def test_a_department_of_another_hospital_is_404(tree):
    other = make_hospital()
    foreign = make_department(other, name="外院科室")
    response = api_client().get(f"/api/v1/hospitals/{tree[0].id}/doctors", department_id=foreign.id)
    assert response.status_code == 404
    assert response.json() == {"code": "department_not_found", "message": "科室不存在或已停用"}


def test_unknown_hospital_is_404_json(db):
    for path in ("departments", "doctors", "notices"):
        response = api_client().get(f"/api/v1/hospitals/999999/{path}")
        assert response.status_code == 404
        assert response.json() == {"code": "hospital_not_found", "message": "医院不存在或已停用"}
