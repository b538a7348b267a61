"""The console's admin site: sign-in with password and TOTP, staff see only their hospitals."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from guahao.console.forms import StaffLoginForm


class ConsoleSite(admin.AdminSite):
    site_header = "挂号管理后台"
    site_title = "挂号管理后台"
    index_title = "医院运营"
    login_form = StaffLoginForm
    login_template = "console/login.html"

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
