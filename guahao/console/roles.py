"""The five staff roles (三权分立 of 等保三级: whoever configures does not audit, whoever audits
changes nothing). Each role is a Django group; its permissions are listed here and nowhere else,
and `sync_roles` (run after every migrate) makes the groups match this table."""

from __future__ import annotations

SYSTEM_ADMIN = "系统管理员"
SECURITY_ADMIN = "安全管理员"
AUDITOR = "审计管理员"
OPERATIONS = "运营"
FINANCE = "财务"

ROLES = (SYSTEM_ADMIN, SECURITY_ADMIN, AUDITOR, OPERATIONS, FINANCE)

_CRUD = ("view", "add", "change", "delete")
_VIEW = ("view",)

# app_label.model → actions; custom permissions by their codename under the model's app.
ROLE_PERMISSIONS: dict[str, dict[str, tuple[str, ...]]] = {
    SYSTEM_ADMIN: {
        "catalog.hospital": ("view", "change"),
        "catalog.campus": _CRUD,
        "catalog.department": _CRUD,
        "catalog.doctor": _CRUD,
        "catalog.notice": ("view", "add", "change"),
        "scheduling.registrationtype": _CRUD,
        "scheduling.releaserule": _CRUD,
        "scheduling.weeklytemplate": _CRUD,
        "scheduling.session": ("view", "add", "change", "suspend_session", "add_extra_slot"),
        "scheduling.slot": _VIEW,
        "policies.policy": ("view", "change"),
        "auth.user": ("view", "add", "change"),
        "auth.group": _VIEW,
        "console.staffprofile": ("view", "add", "change"),
        "his.hisconnection": ("view", "add", "change"),
        "payments.merchantaccount": ("view", "add", "change"),
        "wechat.officialaccount": ("view", "add", "change"),
        "wechat.wechattemplate": _CRUD,
        "wechat.wechatbinding": ("view", "delete"),
        "notifications.messagingsettings": ("view", "add", "change"),
        "notifications.messagetemplate": _CRUD,
        "notifications.delivery": ("view", "retry_delivery"),
        "notifications.outboxevent": ("view", "retry_event"),
        "notifications.jobrun": _VIEW,
    },
    SECURITY_ADMIN: {
        "policies.restriction": ("view", "add", "lift_restriction"),
        "policies.policy": _VIEW,
        "patients.account": ("view", "change"),
        "patients.patientaddattempt": _VIEW,
        "axes.accessattempt": ("view", "delete"),
        "axes.accessfailurelog": _VIEW,
        "auth.user": _VIEW,
    },
    AUDITOR: {
        "console.auditentry": _VIEW,
    },
    OPERATIONS: {
        "booking.registration": ("view", "cancel_on_behalf", "mark_attendance", "export_registration"),
        "booking.hold": _VIEW,
        "patients.patient": ("view", "reveal_personal_data"),
        "patients.account": _VIEW,
        "catalog.notice": ("view", "add", "change"),
        "catalog.department": _VIEW,
        "catalog.doctor": _VIEW,
        "scheduling.session": ("view", "suspend_session", "add_extra_slot"),
        "scheduling.slot": _VIEW,
        "policies.restriction": _VIEW,
        "notifications.messagetemplate": _VIEW,
        "notifications.delivery": ("view", "retry_delivery"),
    },
    FINANCE: {
        "booking.registration": ("view", "cancel_on_behalf", "export_registration"),
        "booking.hold": _VIEW,
        "payments.payment": ("view", "view_ledger_findings"),
        "payments.refund": ("view", "handle_failed_refund"),
        "payments.discrepancy": ("view", "change"),
        "payments.reconciliationrun": _VIEW,
        "payments.merchantaccount": _VIEW,
        "patients.patient": _VIEW,
    },
}


def codenames(role: str) -> list[tuple[str, str, str]]:
    """(app_label, model, codename) of every permission of a role."""
    out: list[tuple[str, str, str]] = []
    for model_key, actions in ROLE_PERMISSIONS[role].items():
        app_label, model = model_key.split(".")
        for action in actions:
            standard = action in _CRUD
            out.append((app_label, model, f"{action}_{model}" if standard else action))
    return out
