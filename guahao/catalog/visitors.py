"""Who a department sees: limits by age and sex (儿科 under 14; 妇科 and 产科 women only), their
defaults by department name, and the check made when a patient is chosen for a visit."""

from __future__ import annotations

import datetime as dt
from typing import Any

from guahao.catalog.models import Department, VisitorSex
from guahao.errors import Forbidden

PAEDIATRIC_MAX_AGE = 14  # exclusive: "under 14"


def visitor_rule_defaults(name: str) -> dict[str, Any]:
    """The limits a new department gets from its name: 儿科 (and 新生儿科, 小儿科…) under 14;
    妇科, 产科, 妇产科 women only; others none. Used where departments are created (the
    console, the HIS sync, the demo data); the console can change them afterwards."""
    if "儿科" in name:
        return {"min_age": None, "max_age": PAEDIATRIC_MAX_AGE, "sex": ""}
    if "妇科" in name or "产科" in name:
        return {"min_age": None, "max_age": None, "sex": VisitorSex.FEMALE}
    return {"min_age": None, "max_age": None, "sex": ""}


def has_visitor_rules(department: Department) -> bool:
    return department.min_age is not None or department.max_age is not None or bool(department.sex)


def age_on(birth_date: dt.date, day: dt.date) -> int:
    """Full years of age on `day` (a birthday on 29 February counts from 1 March in other years)."""
    years = day.year - birth_date.year
    return years - ((day.month, day.day) < (birth_date.month, birth_date.day))


def _with_ancestors(department: Department) -> list[Department]:
    chain = [department]
    while chain[-1].parent_id is not None and len(chain) < 3:  # at most three levels
        chain.append(Department.objects.get(id=chain[-1].parent_id))
    return chain


def _age_range(department: Department) -> str:
    low, high = department.min_age, department.max_age
    if low is not None and high is not None:
        return f"{low}岁及以上、{high}岁以下"
    if high is not None:
        return f"{high}岁以下"
    return f"{low}岁及以上"


def check_visitor(*, department: Department, sex: str, birth_date: dt.date, visit_date: dt.date) -> None:
    """Raise Forbidden when the department (or a parent of it) does not see this patient: by the
    age on the visit date, from the patient's 出生日期, and by the patient's 性别. The message names
    the department, its limit and the patient's field that fails it."""
    age = age_on(birth_date, visit_date)
    for dept in _with_ancestors(department):
        if dept.sex and sex != dept.sex:
            who = "女性" if dept.sex == VisitorSex.FEMALE else "男性"
            raise Forbidden(
                f"{dept.name}仅接待{who}患者，该就诊人的性别不符，请选择其他科室",
                code="department_sex_limit",
                department=dept.name,
            )
        too_young = dept.min_age is not None and age < dept.min_age
        too_old = dept.max_age is not None and age >= dept.max_age
        if too_young or too_old:
            raise Forbidden(
                f"{dept.name}仅接待{_age_range(dept)}患者，按该就诊人的出生日期，就诊当天为{age}岁，请选择其他科室",
                code="department_age_limit",
                department=dept.name,
            )
