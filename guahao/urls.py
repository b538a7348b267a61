from django.contrib import admin
from django.urls import include, path, re_path

from guahao.api import api, unknown_api_path
from guahao.bench_views import bench_json
from guahao.health import healthz
from guahao.metrics import metrics_view

admin.site.site_header = "挂号管理后台"
admin.site.site_title = "挂号管理后台"
admin.site.index_title = "医院运营"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; GUAHAO_METRICS_ALLOW only
    path("bench/json", bench_json, name="bench-json"),  # 404 unless GUAHAO_BENCH_BASELINE=1
    path("api/v1/", api.urls),
    re_path(r"^api/", unknown_api_path),  # after the API: its unknown paths answer JSON 404
    path("admin/", admin.site.urls),
    path("captcha/", include("captcha.urls")),
]

# The patient H5 pages (home at /): last, so they never shadow the routes above.
urlpatterns.append(path("", include("guahao.web.urls")))
