"""The image captcha a hospital may put before sign-in codes (GUAHAO_CAPTCHA=on), asked of an
address once it has passed the `captcha_ip` limit. Images come from django-simple-captcha; each
challenge answers once, right or wrong, so one image cannot be guessed at."""

from __future__ import annotations

from captcha.helpers import captcha_image_url
from captcha.models import CaptchaStore
from django.conf import settings
from django.utils import timezone

from guahao.errors import InvalidInput
from guahao.limits import services as limits


class CaptchaRequired(InvalidInput):
    code = "captcha_required"
    message = "请输入图形验证码"


def check(*, client_ip: str, key: str, answer: str) -> None:
    """Pass when no captcha is due for this address or `answer` solves challenge `key`; otherwise
    CaptchaRequired carrying a fresh challenge (`captcha_key`, `captcha_image`)."""
    if not settings.CAPTCHA_ENABLED or not limits.over("captcha_ip", client_ip):
        return
    if key and answer:
        solved = CaptchaStore.objects.filter(
            hashkey=key[:40], response=answer.strip().lower()[:20], expiration__gt=timezone.now()
        ).exists()
        CaptchaStore.objects.filter(hashkey=key[:40]).delete()
        if solved:
            return
        raise _challenge("图形验证码不正确，请重新输入")
    raise _challenge("请输入图形验证码")


def _challenge(message: str) -> CaptchaRequired:
    CaptchaStore.remove_expired()
    key = CaptchaStore.generate_key()
    return CaptchaRequired(message, captcha_key=key, captcha_image=captcha_image_url(key))
