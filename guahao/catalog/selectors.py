"""Reads for the catalog: hospitals, the department tree, doctors and the notices patients confirm."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db.models import Case, IntegerField, Q, QuerySet, Value, When

from guahao.catalog.models import Department, Doctor, Hospital, Notice, NoticeAck
from guahao.catalog.pinyin import has_chinese, search_key
from guahao.errors import NotFound

if TYPE_CHECKING:
    from guahao.patients.models import Account


def active_hospitals() -> QuerySet[Hospital]:
    return Hospital.objects.filter(is_active=True).order_by("id")


def get_hospital(hospital_id: int) -> Hospital:
    hospital = Hospital.objects.filter(id=hospital_id, is_active=True).first()
    if hospital is None:
        raise NotFound("医院不存在或已停用", code="hospital_not_found")
    return hospital


def payment_channels_of(hospital: Hospital) -> list[str]:
    """The payment channels the hospital offers (wechat, alipay, unionpay), in the order patients
    see them; labels: guahao.payments.channels.PaymentChannel(code).label."""
    return hospital.offered_channels


def get_department(department_id: int, *, hospital: Hospital | None = None) -> Department:
    """An active department of an active hospital (with the hospital loaded); with `hospital`, one
    of that hospital's only."""
    departments = Department.objects.select_related("hospital").filter(
        id=department_id, is_active=True, hospital__is_active=True
    )
    if hospital is not None:
        departments = departments.filter(hospital=hospital)
    department = departments.first()
    if department is None:
        raise NotFound("科室不存在或已停用", code="department_not_found")
    return department


def get_doctor(doctor_id: int) -> Doctor:
    """An active doctor of an active department and hospital (with both loaded)."""
    doctor = (
        Doctor.objects.select_related("hospital", "department")
        .filter(id=doctor_id, is_active=True, department__is_active=True, hospital__is_active=True)
        .first()
    )
    if doctor is None:
        raise NotFound("医生不存在或已停用", code="doctor_not_found")
    return doctor


# --- the department tree ------------------------------------------------------------------------


@dataclass(frozen=True)
class DepartmentIndex:
    """One hospital's department tree as id maps, loaded with one query, so many lookups (a subtree,
    a release rule per session) cost no further queries."""

    parent_of: dict[int, int | None]
    active: frozenset[int]

    def ancestry(self, department_id: int) -> list[int]:
        """The department itself, then its parent, grandparent … (active or not)."""
        chain: list[int] = []
        node: int | None = department_id
        while node is not None and node not in chain:
            chain.append(node)
            node = self.parent_of.get(node)
        return chain

    def subtree(self, department_id: int) -> list[int]:
        """The department and its active descendants (an inactive node hides its branch)."""
        children: dict[int, list[int]] = {}
        for child, parent in self.parent_of.items():
            if parent is not None and child in self.active:
                children.setdefault(parent, []).append(child)
        found, todo = [department_id], [department_id]
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in found:
                    found.append(child)
                    todo.append(child)
        return found


def department_index(hospital_id: int) -> DepartmentIndex:
    rows = Department.objects.filter(hospital_id=hospital_id).values_list("id", "parent_id", "is_active")
    return DepartmentIndex(
        parent_of={pk: parent for pk, parent, _ in rows},
        active=frozenset(pk for pk, _, is_active in rows if is_active),
    )


@dataclass
class DepartmentNode:
    id: int
    name: str
    level: int
    intro: str
    location: str
    bookable: bool
    children: list[DepartmentNode] = field(default_factory=list)


def department_tree(hospital: Hospital) -> list[DepartmentNode]:
    """Active departments down to the hospital's browse level. Patients pick a node marked bookable:
    those at the browse level, and leaves above it (a 皮肤科 with no sub-departments)."""
    rows = list(
        Department.objects.filter(hospital=hospital, is_active=True, level__lte=hospital.browse_level)
        .order_by("level", "sort_order", "id")
    )
    nodes = {
        d.id: DepartmentNode(id=d.id, name=d.name, level=d.level, intro=d.intro, location=d.location, bookable=False)
        for d in rows
    }
    roots: list[DepartmentNode] = []
    for d in rows:
        if d.parent_id is None:
            roots.append(nodes[d.id])
        elif d.parent_id in nodes:
            nodes[d.parent_id].children.append(nodes[d.id])
        # A child of an inactive (or deeper than shown) parent is hidden with its parent.
    for node in nodes.values():
        node.bookable = node.level == hospital.browse_level or not node.children
    return roots


def doctors_of(hospital: Hospital, *, department: Department | None = None) -> QuerySet[Doctor]:
    """Active doctors of the hospital; with a department, those of it and its sub-departments."""
    qs = Doctor.objects.filter(hospital=hospital, is_active=True, department__is_active=True)
    if department is not None:
        qs = qs.filter(department_id__in=department_index(hospital.id).subtree(department.id))
    return qs.select_related("department").order_by("department__sort_order", "department_id", "sort_order", "id")


# --- search -------------------------------------------------------------------------------------

SEARCH_MAX_LENGTH = 32
# A Latin query this long or longer also matches inside the full pinyin (`xueguan` → 心血管内科);
# shorter ones only as a prefix, or `ke` would list every 科.
_PINYIN_CONTAINS_FROM = 3


@dataclass(frozen=True)
class SearchResult:
    """Departments first, then doctors; in each, exact matches, then prefix matches, then the rest,
    then the hospital's own order. Doctors come with their department loaded; departments with
    their parent."""

    departments: list[Department]
    doctors: list[Doctor]


def _match(q: str) -> tuple[Q, Case] | None:
    """The filter and the rank (0 exact, 1 prefix, 2 contains) for a query, on the name for Chinese
    and on the stored pinyin columns for Latin letters; None when nothing can match."""
    if has_chinese(q):
        q = unicodedata.normalize("NFKC", q)  # full-width ＣＴ室 is CT室
        exact, prefix, anywhere = Q(name__iexact=q), Q(name__istartswith=q), Q(name__icontains=q)
    else:
        key = search_key(q)
        if not key:
            return None
        exact = Q(name_pinyin=key) | Q(name_initials=key)
        prefix = Q(name_pinyin__startswith=key) | Q(name_initials__startswith=key)
        anywhere = prefix | Q(name_pinyin__contains=key) if len(key) >= _PINYIN_CONTAINS_FROM else prefix
    rank = Case(When(exact, then=Value(0)), When(prefix, then=Value(1)), default=Value(2), output_field=IntegerField())
    return anywhere, rank


def search(hospital: Hospital, q: str, *, limit: int = 20) -> SearchResult:
    """Active departments and doctors of the hospital whose name matches `q`: Chinese text inside
    the name (`皮肤`), or Latin letters as the start of the full pinyin or of the initials (`pfk`,
    `pifu`, `ljg`), or, from three letters on, inside the full pinyin (`xueguan`). At most `limit`
    of each. Two queries whatever the number of doctors: the match is on indexed columns filled on
    save (see catalog.pinyin), never on names converted at query time."""
    q = q.strip()[:SEARCH_MAX_LENGTH]
    match = _match(q) if q else None
    if match is None or limit < 1:
        return SearchResult(departments=[], doctors=[])
    where, rank = match
    departments = list(
        Department.objects.filter(where, hospital=hospital, is_active=True)
        .select_related("parent")
        .annotate(rank=rank)
        .order_by("rank", "level", "sort_order", "id")[:limit]
    )
    doctors = list(
        Doctor.objects.filter(where, hospital=hospital, is_active=True, department__is_active=True)
        .select_related("department")
        .annotate(rank=rank)
        .order_by("rank", "department__sort_order", "sort_order", "id")[:limit]
    )
    return SearchResult(departments=departments, doctors=doctors)


# --- notices ------------------------------------------------------------------------------------


def current_notices(hospital: Hospital) -> list[Notice]:
    """The current notice of each kind: its highest active version."""
    current: dict[str, Notice] = {}
    for notice in Notice.objects.filter(hospital=hospital, is_active=True).order_by("kind", "-version"):
        current.setdefault(notice.kind, notice)
    kinds = list(Notice.Kind.values)  # 挂号须知 before 防疫须知, as the kinds are declared
    return sorted(current.values(), key=lambda n: kinds.index(n.kind) if n.kind in kinds else len(kinds))


def acknowledged_notice_ids(*, account: Account, notices: list[Notice]) -> set[int]:
    return set(
        NoticeAck.objects.filter(account=account, notice_id__in=[n.id for n in notices]).values_list(
            "notice_id", flat=True
        )
    )


def pending_notices(*, account: Account, hospital: Hospital) -> list[Notice]:
    """Current notices that need the account's confirmation and do not have it yet. Acks belong to
    one version, so publishing a new version makes the notice pending again."""
    notices = [n for n in current_notices(hospital) if n.requires_ack]
    acked = acknowledged_notice_ids(account=account, notices=notices)
    return [n for n in notices if n.id not in acked]
