"""就诊人管理: the account's visiting patients (masked), adding one with real-name verification,
removing one, choosing the default. The patients services decide; these views show their answers,
each refusal at the field it concerns."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from guahao import clock, pii
from guahao.errors import GuahaoError, InvalidInput
from guahao.limits.clientip import client_ip
from guahao.patients import selectors, services
from guahao.patients.idcard import age_on, parse_id_number, validate_name, validate_phone
from guahao.patients.models import Patient
from guahao.web.auth import account_required
from guahao.web.errors import error_page

# Which form field each refusal of add_patient belongs to; others are shown above the button.
FIELD_OF_CODE = {
    "invalid_name": "name",
    "invalid_id_type": "id_type",
    "invalid_id_number": "id_number",
    "realname_rejected": "id_number",
    "patient_exists": "id_number",
    "invalid_phone": "phone",
    "invalid_relation": "relation",
    "self_exists": "relation",
}
FIELDS = ("name", "id_type", "id_number", "phone", "relation")


def _safe_next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target.startswith("/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return ""


def _patient_row(patient: Patient) -> dict:
    return {
        "id": patient.id,
        "name": pii.mask_name(patient.name),
        "id_type": patient.get_id_type_display(),
        "id_number": pii.mask_id_number(patient.id_number),
        "phone": pii.mask_phone(patient.phone),
        "relation": patient.get_relation_display(),
        "sex": patient.get_sex_display(),
        "age": age_on(patient.birth_date, clock.today()),
        "is_default": patient.is_default,
    }


@require_http_methods(["GET"])
@account_required
def patients(request: HttpRequest) -> HttpResponse:
    rows = [_patient_row(p) for p in selectors.patients_of(request.account)]
    context = {
        "patients": rows,
        "can_add": len(rows) < services.MAX_PATIENTS_PER_ACCOUNT,
        "max_patients": services.MAX_PATIENTS_PER_ACCOUNT,
        "message": {
            "added": "已添加就诊人",
            "removed": "已删除就诊人",
            "default": "已设为默认就诊人",
        }.get(request.GET.get("done", ""), ""),
    }
    return render(request, "web/patients/list.html", context)


def _other_field_errors(data: dict, errors: dict[str, str]) -> None:
    """The service stops at its first refusal; the same validators (no side effects) find the
    others, so the patient fixes every field in one go."""
    checks = {
        "name": lambda: validate_name(data["name"]),
        "id_number": lambda: parse_id_number(data["id_number"], id_type=data["id_type"]),
        "phone": lambda: validate_phone(data["phone"]),
    }
    for field, check in checks.items():
        if field in errors:
            continue
        try:
            check()
        except InvalidInput as exc:
            errors[field] = exc.message
    if "relation" not in errors and data["relation"] not in Patient.Relation.values:
        errors["relation"] = "请选择与就诊人的关系"


@require_http_methods(["GET", "POST"])
@account_required
def add_patient(request: HttpRequest) -> HttpResponse:
    data = {field: request.POST.get(field, "").strip() for field in FIELDS}
    if not data["id_type"]:
        data["id_type"] = Patient.IdType.RESIDENT
    errors: dict[str, str] = {}
    form_error = ""
    status = 200
    if request.method == "POST":
        try:
            patient = services.add_patient(
                account=request.account, client_ip=client_ip(request), **data
            )
        except GuahaoError as exc:
            status = exc.status
            field = FIELD_OF_CODE.get(exc.code)
            if field:
                errors[field] = exc.message
            else:
                form_error = exc.message
            if isinstance(exc, InvalidInput):
                _other_field_errors(data, errors)
        else:
            target = _safe_next(request)
            if target:
                joiner = "&" if "?" in target else "?"
                return HttpResponseRedirect(f"{target}{joiner}{urlencode({'patient': patient.id})}")
            return HttpResponseRedirect(reverse("web:patients") + "?done=added")
    context = {
        "data": data,
        "errors": errors,
        "form_error": form_error,
        "id_types": Patient.IdType.choices,
        "relations": Patient.Relation.choices,
        "next": _safe_next(request),
    }
    return render(request, "web/patients/add.html", context, status=status)


@require_POST
@account_required
def remove_patient(request: HttpRequest, patient_id: int) -> HttpResponse:
    try:
        services.remove_patient(account=request.account, patient_id=patient_id)
    except GuahaoError as exc:
        return error_page(request, exc, status=exc.status)
    return HttpResponseRedirect(reverse("web:patients") + "?done=removed")


@require_POST
@account_required
def set_default(request: HttpRequest, patient_id: int) -> HttpResponse:
    try:
        services.set_default_patient(account=request.account, patient_id=patient_id)
    except GuahaoError as exc:
        return error_page(request, exc, status=exc.status)
    return HttpResponseRedirect(reverse("web:patients") + "?done=default")
