"""Sign-in for the patient pages: the session (server-side, in the database) holds the bearer
token key that guahao.patients.services.login issued, so every web sign-in is one device in
GET /api/v1/auth/tokens and ends like any other."""

from __future__ import annotations

import functools
from collections.abc import Callable
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from guahao.patients import services
from guahao.patients.models import Account, AuthToken
from guahao.patients.tokens import known_tokens

SESSION_KEY = "web_token"


def signed_in_token(request: HttpRequest) -> AuthToken | None:
    """The live token this browser signed in with, or None. Cached on the request."""
    if not hasattr(request, "_web_token"):
        key = request.session.get(SESSION_KEY, "") if hasattr(request, "session") else ""
        token = known_tokens.token_for_key(key) if key else None
        if token is not None:
            services.touch_token(token)
        request._web_token = token
    return request._web_token


def signed_in_account(request: HttpRequest) -> Account | None:
    token = signed_in_token(request)
    return token.account if token else None


def login_url(next_path: str) -> str:
    return "/login?" + urlencode({"next": next_path})


def redirect_to_login(request: HttpRequest) -> HttpResponse:
    url = login_url(request.get_full_path())
    if request.headers.get("HX-Request"):
        # htmx would swap a redirect's page into the target; have it navigate instead.
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return HttpResponseRedirect(url)


def account_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Sets `request.account` and `request.auth_token`, or sends the browser to /login?next=…"""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        token = signed_in_token(request)
        if token is None:
            return redirect_to_login(request)
        request.account = token.account
        request.auth_token = token
        return view(request, *args, **kwargs)

    return wrapped


def sign_in(request: HttpRequest, key: str) -> None:
    """Remember the token key in a fresh session (a new session id: no fixation)."""
    request.session.cycle_key()
    request.session[SESSION_KEY] = key
    request.__dict__.pop("_web_token", None)  # re-read on next use


def sign_out(request: HttpRequest) -> None:
    token = signed_in_token(request)
    if token is not None:
        services.logout(token=token)
    request.session.flush()
    request._web_token = None
