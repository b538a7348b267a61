"""Sign-in, sign-out and failed sign-ins of staff go to the audit log."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from guahao.console.models import AuditEntry
from guahao.console.services import record_audit


def _is_console(request) -> bool:
    return request is not None and request.path.startswith("/admin/")


@receiver(user_logged_in, dispatch_uid="console.audit.login")
def _logged_in(sender, request, user, **kwargs) -> None:
    if _is_console(request):
        request.session.set_expiry(0)  # the staff session ends with the browser too
        record_audit(request=request, action=AuditEntry.Action.LOGIN, staff=user)


@receiver(user_logged_out, dispatch_uid="console.audit.logout")
def _logged_out(sender, request, user, **kwargs) -> None:
    if _is_console(request) and user is not None:
        idle = getattr(request, "console_idle_logout", False)
        record_audit(
            request=request,
            action=AuditEntry.Action.SESSION_EXPIRED if idle else AuditEntry.Action.LOGOUT,
            staff=user,
            detail="闲置超时，服务器端结束会话" if idle else "",
        )


@receiver(user_login_failed, dispatch_uid="console.audit.login_failed")
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    if _is_console(request):
        record_audit(
            request=request,
            action=AuditEntry.Action.LOGIN_FAILED,
            result=AuditEntry.Result.FAILURE,
            username=str(credentials.get("username", ""))[:150],
        )
