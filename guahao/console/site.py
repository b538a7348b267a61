"""The console's admin site: sign-in with password and TOTP, staff see only their hospitals; the
home page is the dashboard, and the pages are grouped by work area rather than by code package."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from guahao.console.forms import StaffLoginForm

# The console's work areas, in the order staff meet them. Each names its pages by model label
# ("app.model") or a whole app ("app.*"); a page named nowhere still shows, under 其他.
WORK_AREAS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("orders", "订单与患者", (
        "booking.registration", "booking.hold", "patients.patient", "patients.account", "patients.patientcard",
        "catalog.noticeack",
    )),
    ("schedule", "排班与号源", ("scheduling.session", "scheduling.slot", "scheduling.weeklytemplate")),
    ("hospital", "医院配置", (
        "catalog.hospital", "catalog.campus", "catalog.department", "catalog.doctor", "catalog.notice",
        "scheduling.registrationtype", "scheduling.releaserule", "policies.policy", "his.hisconnection", "catalog.*",
    )),
    ("finance", "财务", ("payments.payment", "payments.refund", "payments.*")),
    ("security", "安全", ("policies.restriction", "policies.*", "patients.patientaddattempt", "axes.*", "otp_totp.*")),
    ("messages", "患者消息", (
        "notifications.messagingsettings", "notifications.messagetemplate", "notifications.delivery",
        "wechat.officialaccount", "wechat.wechattemplate", "wechat.wechatbinding", "wechat.*",
    )),
    ("background", "后台任务", ("notifications.outboxevent", "notifications.jobrun", "notifications.*")),
    ("audit", "审计", ("console.auditentry",)),
    ("accounts", "账号与权限", ("auth.user", "auth.group", "console.staffprofile", "auth.*")),
)
OTHER_AREA = ("other", "其他")


def _area_rank(label: str) -> tuple[int, int]:
    """(area index, position in the area) of a model label; exact names before app wildcards."""
    app_label = label.split(".")[0]
    for wildcard in (False, True):
        for area_index, (_key, _name, members) in enumerate(WORK_AREAS):
            for position, member in enumerate(members):
                if (member == f"{app_label}.*") if wildcard else (member == label):
                    return area_index, position
    return len(WORK_AREAS), 0


class ConsoleSite(admin.AdminSite):
    site_header = "挂号管理后台"
    site_title = "挂号管理后台"
    index_title = "医院运营"
    login_form = StaffLoginForm
    login_template = "console/login.html"
    index_template = "console/dashboard.html"

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict]:
        """The pages this staff member may open, grouped into work areas (an app's own index page
        keeps Django's per-app list). Nothing is dropped: every model the user may see is in one
        area."""
        if app_label is not None:
            return super().get_app_list(request, app_label)
        index_url = reverse("admin:index", current_app=self.name)
        areas = [*WORK_AREAS, (*OTHER_AREA, ())]
        grouped: dict[int, list[tuple[tuple[int, int], str, dict]]] = {}
        for app in self._build_app_dict(request).values():
            for model in app["models"]:
                rank = _area_rank(model["model"]._meta.label_lower)
                grouped.setdefault(rank[0], []).append((rank, str(model["name"]), model))
        app_list = []
        for area_index in sorted(grouped):
            key, name, _members = areas[area_index]
            models = [m for _rank, _name, m in sorted(grouped[area_index], key=lambda r: (r[0], r[1]))]
            app_list.append({
                "name": name,
                "app_label": key,
                # An anchor on the home page: never a substring of a real page's path, so the side
                # bar marks no area as "current" by mistake.
                "app_url": f"{index_url}#area-{key}",
                "has_module_perms": True,
                "models": models,
            })
        return app_list

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        from guahao.console.dashboard import dashboard_for

        return super().index(request, {"dashboard": dashboard_for(request.user), **(extra_context or {})})

    def has_permission(self, request: HttpRequest) -> bool:
        """Only an active staff member who signed in with the second factor in this session."""
        user = request.user
        verified = getattr(user, "is_verified", lambda: False)()
        return user.is_active and user.is_staff and verified

    def password_change(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        response = super().password_change(request, extra_context)
        if request.method == "POST" and response.status_code == 302:
            from guahao.console.models import AuditEntry
            from guahao.console.services import note_password_changed, record_audit

            note_password_changed(user=request.user, by_owner=True)
            record_audit(request=request, action=AuditEntry.Action.PASSWORD_CHANGED, obj=request.user)
        return response
