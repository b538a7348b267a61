"""The console's sign-in: password and TOTP code in one form, one outcome for the audit log."""

from __future__ import annotations

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import user_login_failed
from django_otp.plugins.otp_totp.models import TOTPDevice


class StaffLoginForm(AdminAuthenticationForm):
    """Username, password and the 6-digit code of the staff member's authenticator app. A wrong
    code counts as a failed sign-in (django-axes locks the account after 5), exactly like a wrong
    password, and the error does not say which of the two was wrong."""

    otp_token = forms.CharField(
        label="动态验证码",
        max_length=6,
        min_length=6,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
        help_text="身份验证器（如微信小程序“腾讯身份验证器”、Google Authenticator）中的 6 位数字",
    )

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_login": "用户名、密码或动态验证码不正确（连续失败 5 次将锁定 15 分钟）",
    }

    def clean(self):
        super().clean()  # authenticate(): a wrong password fails here and axes counts it
        user = self.user_cache
        token = (self.cleaned_data.get("otp_token") or "").strip()
        device = None
        if user is not None and token.isdigit():
            for candidate in TOTPDevice.objects.devices_for_user(user, confirmed=True):
                if candidate.verify_is_allowed()[0] and candidate.verify_token(token):
                    device = candidate
                    break
        if device is None:
            # Right password, wrong code: a failed sign-in for the lockout and the audit log.
            user_login_failed.send(
                sender=__name__,
                credentials={"username": self.cleaned_data.get("username", "")},
                request=self.request,
            )
            self.user_cache = None
            raise self.get_invalid_login_error()
        user.otp_device = device  # django_otp persists it in the session on login
        return self.cleaned_data
