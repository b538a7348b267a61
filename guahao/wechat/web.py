"""网页授权 (OAuth 2.0, snsapi_base) in the patient H5: who a patient is inside WeChat.

A page opened inside WeChat (User-Agent "MicroMessenger") of a hospital with an enabled 公众号,
in a browser session without an openid, is sent once to WeChat's authorize URL; WeChat returns to
/wechat/oauth/callback with a code and our state. The callback checks the state (an HMAC of a
nonce kept in this session: single-use, 10 minutes), exchanges the code for the openid (WeChat
takes a code once) and keeps the openid in the session. If an account is bound to that openid the
patient is signed in (the same session token as an SMS sign-in: one device in
GET /api/v1/auth/tokens); otherwise the next SMS sign-in in this session binds it
(services.bind_openid: once, and never moved to a second account).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from urllib.parse import urlencode

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.crypto import constant_time_compare, salted_hmac
from django.views.decorators.http import require_GET

from guahao import clock
from guahao.errors import Forbidden
from guahao.wechat import selectors, services, tokens
from guahao.wechat.client import WechatApiError, WechatUnavailable
from guahao.wechat.models import OfficialAccount

log = logging.getLogger("guahao.wechat")

CALLBACK_PATH = "/wechat/oauth/callback"
OPENID_KEY = "wechat_openid"  # {"app_id": …, "openid": …}
PENDING_KEY = "wechat_oauth"  # {"nonce": …, "at": …, "next": …, "app_id": …}
TRIED_KEY = "wechat_oauth_tried"  # app_id: the authorize redirect happens once per session
SIGNED_OUT_KEY = "wechat_signed_out"  # no silent sign-in after the patient signed out
STATE_TTL = dt.timedelta(minutes=10)
_SALT = "guahao.wechat.oauth-state"
# Paths that are not patient pages, or are the sign-in flow itself.
_SKIP = ("/api/", "/admin/", "/static/", "/captcha/", "/healthz", "/wechat/", "/favicon")


def inside_wechat(request: HttpRequest) -> bool:
    return "MicroMessenger" in request.headers.get("User-Agent", "")


def _state_for(nonce: str, app_id: str) -> str:
    # WeChat allows [a-zA-Z0-9] up to 128 bytes: the nonce and a 64-bit HMAC, in hex.
    return nonce + salted_hmac(_SALT, f"{nonce}:{app_id}", algorithm="sha256").hexdigest()[:16]


def authorize_url(request: HttpRequest, official: OfficialAccount) -> str:
    """WeChat's authorize URL for this browser session, remembering a fresh state in it."""
    nonce = secrets.token_hex(8)
    request.session[PENDING_KEY] = {
        "nonce": nonce,
        "at": clock.now().isoformat(),
        "next": request.get_full_path(),
        "app_id": official.app_id,
    }
    request.session[TRIED_KEY] = official.app_id
    query = urlencode(
        {
            "appid": official.app_id,
            "redirect_uri": settings.PUBLIC_URL + CALLBACK_PATH,
            "response_type": "code",
            "scope": "snsapi_base",
            "state": _state_for(nonce, official.app_id),
        }
    )
    return f"{official.oauth_base.rstrip('/')}/connect/oauth2/authorize?{query}#wechat_redirect"


def session_openid(request: HttpRequest, app_id: str) -> str | None:
    kept = request.session.get(OPENID_KEY) if hasattr(request, "session") else None
    return kept["openid"] if isinstance(kept, dict) and kept.get("app_id") == app_id else None


class WechatSignInMiddleware:
    """Sends a page view inside WeChat through 网页授权 once per browser session."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        official = self._needs_authorization(request)
        if official is not None:
            return HttpResponseRedirect(authorize_url(request, official))
        return self.get_response(request)

    @staticmethod
    def _needs_authorization(request: HttpRequest) -> OfficialAccount | None:
        if (
            request.method != "GET"
            or request.headers.get("HX-Request")
            or not inside_wechat(request)
            or request.path.startswith(_SKIP)
            or not hasattr(request, "session")
            or request.session.get(SIGNED_OUT_KEY)
        ):
            return None
        from guahao.web.hospital import current_hospital

        try:
            hospital = current_hospital(request)
        except Http404:
            return None
        official = selectors.enabled_official_account(hospital.id)
        if official is None or request.session.get(TRIED_KEY) == official.app_id:
            return None
        if session_openid(request, official.app_id):
            return None
        return official


def _take_pending(request: HttpRequest, state: str) -> dict:
    """The pending authorization this state belongs to; it is used up whatever the outcome."""
    pending = request.session.pop(PENDING_KEY, None)
    refused = Forbidden("微信授权已失效，请关闭页面后从公众号菜单重新进入", code="wechat_state_invalid")
    if not isinstance(pending, dict) or not state:
        raise refused
    expected = _state_for(str(pending.get("nonce", "")), str(pending.get("app_id", "")))
    if not constant_time_compare(expected, state):
        raise refused
    if clock.now() - dt.datetime.fromisoformat(pending["at"]) > STATE_TTL:
        raise refused
    return pending


@require_GET
def oauth_callback(request: HttpRequest) -> HttpResponse:
    """WeChat's return from the authorize page: ?code=…&state=…"""
    from guahao.web.auth import sign_in, signed_in_account
    from guahao.web.views import notices_first

    pending = _take_pending(request, request.GET.get("state", ""))
    next_path = pending["next"] if str(pending.get("next", "")).startswith("/") else "/"
    official = selectors.official_account_by_app_id(pending["app_id"])
    code = request.GET.get("code", "")
    if official is None or not code:  # no code: the patient did not allow it
        return HttpResponseRedirect(next_path)
    try:
        openid = tokens.client_for(official).exchange_code(code)
    except WechatApiError as exc:
        log.warning("wechat oauth code refused", extra={"app_id": official.app_id, "errcode": exc.errcode})
        raise Forbidden("微信授权码无效或已使用，请关闭页面后重新进入", code="wechat_code_invalid") from exc
    except WechatUnavailable as exc:
        # The patient goes on without WeChat sign-in; SMS sign-in works as always.
        log.warning("wechat oauth did not answer", extra={"app_id": official.app_id, "error": str(exc)})
        return HttpResponseRedirect(next_path)
    request.session[OPENID_KEY] = {"app_id": official.app_id, "openid": openid}
    account = signed_in_account(request)
    if account is not None:
        services.bind_openid(account_id=account.id, app_id=official.app_id, openid=openid)
        return HttpResponseRedirect(next_path)
    bound_id = selectors.account_id_for_openid(app_id=official.app_id, openid=openid)
    if bound_id is not None:
        _sign_in_bound(request, bound_id, sign_in)
        return HttpResponseRedirect(notices_first(request, next_path))
    return HttpResponseRedirect(next_path)


def _sign_in_bound(request: HttpRequest, account_id: int, sign_in: Callable[[HttpRequest, str], None]) -> None:
    from guahao.limits.clientip import client_ip
    from guahao.patients import services as patients
    from guahao.patients.models import Account

    account = Account.objects.get(pk=account_id)
    key = patients.issue_token(account=account, user_agent=request.headers.get("User-Agent", ""), client_ip=client_ip(request))
    sign_in(request, key)  # a new session id; the openid stays in the session's data
    log.info("signed in by wechat openid", extra={"account_id": account_id})


def bind_after_sign_in(request: HttpRequest, account_id: int) -> services.BindOutcome | None:
    """After an SMS sign-in: bind the openid this session learned from WeChat, if any."""
    kept = request.session.get(OPENID_KEY)
    if not isinstance(kept, dict) or not kept.get("openid"):
        return None
    if selectors.official_account_by_app_id(str(kept.get("app_id", ""))) is None:
        return None
    return services.bind_openid(account_id=account_id, app_id=kept["app_id"], openid=kept["openid"])


def mark_signed_out(request: HttpRequest) -> None:
    """After signing out inside WeChat: no silent sign-in again in this browser session."""
    request.session[SIGNED_OUT_KEY] = True
