"""Writes of the console: the audit log, staff accounts and the role groups."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.http import HttpRequest

from guahao import clock
from guahao.console import roles
from guahao.console.models import AuditEntry, StaffProfile
from guahao.errors import InvalidInput

PASSWORD_MAX_AGE = dt.timedelta(days=90)


def _client_ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    from guahao.limits.clientip import client_ip

    return client_ip(request) or None


def record_audit(
    *,
    request: HttpRequest | None,
    action: str,
    obj: models.Model | None = None,
    hospital: Any = None,
    before: dict | None = None,
    after: dict | None = None,
    result: str = AuditEntry.Result.SUCCESS,
    detail: str = "",
    staff: AbstractBaseUser | None = None,
    username: str = "",
) -> AuditEntry:
    """Append one row to the audit log. Called inside the transaction of the action it records,
    so an action and its row commit or roll back together. `hospital` defaults to the object's."""
    user = staff if staff is not None else getattr(request, "user", None)
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    if hospital is None and obj is not None:
        hospital = getattr(obj, "hospital", None)
    return AuditEntry.objects.create(
        at=clock.now(),
        staff_id=user.pk if user is not None else None,
        staff_username=(user.get_username() if user is not None else username)[:150],
        hospital_id=getattr(hospital, "pk", None),
        hospital_name=(getattr(hospital, "name", "") or "")[:100],
        action=action,
        object_type=str(obj._meta.verbose_name) if obj is not None else "",
        object_id=str(obj.pk) if obj is not None and obj.pk is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        before=before,
        after=after,
        result=result,
        detail=detail[:300],
        client_ip=_client_ip(request),
    )


def sync_roles() -> None:
    """Make the five role groups hold exactly the permissions of `roles.ROLE_PERMISSIONS`. A
    permission named there that does not exist is a mistake in the table: fail loudly."""
    with transaction.atomic():
        for role in roles.ROLES:
            group, _ = Group.objects.get_or_create(name=role)
            wanted = roles.codenames(role)
            perms = []
            for app_label, model, codename in wanted:
                try:
                    perms.append(
                        Permission.objects.get(
                            content_type__app_label=app_label, content_type__model=model, codename=codename
                        )
                    )
                except Permission.DoesNotExist as exc:
                    raise LookupError(f"role {role}: no permission {app_label}.{codename}") from exc
            group.permissions.set(perms)


def _check_password(password: str, user: AbstractBaseUser | None) -> None:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise InvalidInput("；".join(exc.messages), code="password_weak") from exc


@transaction.atomic
def create_staff(
    *,
    username: str,
    password: str,
    roles_: list[str],
    hospitals: list,
    full_name: str = "",
    must_change_password: bool = True,
) -> AbstractBaseUser:
    """A staff account with its roles and hospitals. The password follows the console's rules;
    the owner must change it at the first sign-in unless told otherwise (the demo accounts)."""
    User = get_user_model()
    username = username.strip()
    if not username:
        raise InvalidInput("请填写用户名", code="username_required")
    if User.objects.filter(username=username).exists():
        raise InvalidInput(f"用户名 {username} 已存在", code="username_taken")
    unknown = [r for r in roles_ if r not in roles.ROLES]
    if unknown or not roles_:
        raise InvalidInput(f"角色须为：{'、'.join(roles.ROLES)}", code="role_invalid")
    user = User(username=username, first_name=full_name[:150], is_staff=True, is_active=True)
    _check_password(password, user)
    user.set_password(password)
    user.save()
    user.groups.set(Group.objects.filter(name__in=roles_))
    profile, _ = StaffProfile.objects.get_or_create(user=user)
    profile.hospitals.set(hospitals)
    profile.password_changed_at = clock.now()
    profile.must_change_password = must_change_password
    profile.save()
    return user


@transaction.atomic
def create_superuser(*, username: str, password: str) -> AbstractBaseUser:
    """The account that sets up a new deployment (adds the hospital and the first system
    administrators), under the same password rules; it sees every hospital."""
    User = get_user_model()
    username = username.strip()
    if not username or User.objects.filter(username=username).exists():
        raise InvalidInput(f"用户名 {username} 为空或已存在", code="username_taken")
    user = User(username=username, is_staff=True, is_superuser=True, is_active=True)
    _check_password(password, user)
    user.set_password(password)
    user.save()
    StaffProfile.objects.create(user=user, password_changed_at=clock.now(), must_change_password=True)
    return user


def password_expired(user: AbstractBaseUser, *, now: dt.datetime) -> bool:
    """A staff password must be changed when someone else chose it, or after 90 days."""
    profile = StaffProfile.objects.filter(user=user).first()
    if profile is None:
        return False  # not a console staff account made by us (a bare superuser): no rule to apply
    if profile.must_change_password or profile.password_changed_at is None:
        return True
    return now - profile.password_changed_at > PASSWORD_MAX_AGE


def note_password_changed(*, user: AbstractBaseUser, by_owner: bool) -> None:
    """After a password is set: the 90 days start again; a password chosen by its owner clears
    the must-change flag, one set by an administrator raises it."""
    StaffProfile.objects.update_or_create(
        user=user,
        defaults={"password_changed_at": clock.now(), "must_change_password": not by_owner},
    )


def enrol_totp(*, user: AbstractBaseUser) -> str:
    """Give a staff member a new TOTP secret (replacing any earlier one) and return its
    otpauth:// URL for the authenticator app; shown once, to the member or whoever set them up."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).delete()
        device = TOTPDevice.objects.create(user=user, name="身份验证器", confirmed=True)
    return device.config_url


def totp_secret(config_url: str) -> str:
    """The base32 secret inside an otpauth:// URL, for typing into an app by hand."""
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(config_url).query)["secret"][0]
