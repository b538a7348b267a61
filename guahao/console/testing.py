"""Builders for console tests: staff of a role at some hospitals, their current TOTP code, and a
client signed in through the real sign-in form or (for tests of other rules) directly."""

from __future__ import annotations

import itertools

from django.contrib.auth.models import AbstractBaseUser
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from guahao.console.services import create_staff, enrol_totp

STAFF_PASSWORD = "Staff#2026pass"
_seq = itertools.count(1)


def make_staff(*, role: str, hospitals: list, username: str | None = None, **extra) -> AbstractBaseUser:
    user = create_staff(
        username=username or f"staff{next(_seq)}",
        password=STAFF_PASSWORD,
        roles_=[role] if isinstance(role, str) else list(role),
        hospitals=hospitals,
        must_change_password=extra.pop("must_change_password", False),
    )
    enrol_totp(user=user)
    return user


def current_code(user: AbstractBaseUser, *, fresh: bool = True) -> str:
    """The code the staff member's authenticator shows now. A code is accepted once (django-otp
    remembers the last time step used), so `fresh` forgets that, as if the next step had come."""
    device = TOTPDevice.objects.get(user=user)
    if fresh:
        TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1)
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"


def sign_in(client: Client, user: AbstractBaseUser, *, password: str = STAFF_PASSWORD, code: str | None = None):
    return client.post(
        "/admin/login/",
        {"username": user.get_username(), "password": password, "otp_token": code or current_code(user),
         "next": "/admin/"},
    )


def console_client(user: AbstractBaseUser) -> Client:
    """A client of a staff member who signed in with password and second factor (the session is
    set up directly, without the form)."""
    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = TOTPDevice.objects.get(user=user).persistent_id
    session.save()
    return client


def superuser_client(username: str = "admin") -> Client:
    """A superuser with a second factor, signed in: sees every hospital, holds every permission."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser(username, f"{username}@example.com", STAFF_PASSWORD)
    enrol_totp(user=user)
    return console_client(user)
