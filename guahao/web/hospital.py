"""Which hospital the patient pages show: the deployment's hospital (the first active one), or the
one chosen with ?hospital=<id>, remembered in the session."""

from __future__ import annotations

from django.http import Http404, HttpRequest

from guahao.catalog.models import Hospital
from guahao.catalog.selectors import active_hospitals

SESSION_KEY = "web_hospital"


def current_hospital(request: HttpRequest) -> Hospital:
    cached = getattr(request, "_web_hospital", None)
    if cached is not None:
        return cached
    hospitals = active_hospitals()
    chosen = request.GET.get("hospital", "")
    hospital = None
    if chosen.isdigit():
        hospital = hospitals.filter(pk=int(chosen)).first()
        if hospital is not None and hasattr(request, "session"):
            request.session[SESSION_KEY] = hospital.pk
    if hospital is None and hasattr(request, "session"):
        remembered = request.session.get(SESSION_KEY)
        if remembered:
            hospital = hospitals.filter(pk=remembered).first()
    if hospital is None:
        hospital = hospitals.order_by("id").first()
    if hospital is None:
        raise Http404("没有启用的医院")
    request._web_hospital = hospital
    return hospital
