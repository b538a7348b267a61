"""Reads for the console: which hospitals a staff member works for."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


def hospital_ids_of(user: AbstractBaseUser | AnonymousUser) -> set[int] | None:
    """The hospitals whose data this staff member may see; None means all of them (a superuser,
    who exists only to set up the first administrators). Cached on the user for the request."""
    if not getattr(user, "is_authenticated", False):
        return set()
    if user.is_superuser:
        return None
    cached = getattr(user, "_console_hospital_ids", None)
    if cached is None:
        from guahao.console.models import StaffProfile

        profile = StaffProfile.objects.filter(user=user).first()
        cached = set(profile.hospitals.values_list("id", flat=True)) if profile else set()
        user._console_hospital_ids = cached
    return cached


def roles_of(user: AbstractBaseUser) -> list[str]:
    return list(user.groups.order_by("name").values_list("name", flat=True))
