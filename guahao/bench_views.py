"""B_json, the baseline of bench/browse.py: the cheapest JSON answer the server can give through the
same middleware and settings as the real views, so a view's requests/s can be read as a fraction of
it. It answers 404 unless settings.BENCH_BASELINE (GUAHAO_BENCH_BASELINE=1), as an unknown path would."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def bench_json(request: HttpRequest) -> JsonResponse:
    if not settings.BENCH_BASELINE:
        raise Http404
    return JsonResponse({"ok": True, "service": "guahao"})
