"""Bearer-token authentication for the API: `request.auth` is the signed-in Account."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from guahao.patients import services
from guahao.patients.models import Account
from guahao.patients.tokens import known_tokens

# token_urlsafe(32) is 43 characters; anything far longer is not one of ours.
_MAX_TOKEN_LENGTH = 128


class BearerAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Account | None:
        token = token.strip()
        if not token or len(token) > _MAX_TOKEN_LENGTH:
            return None
        found = known_tokens.token_for_key(token)  # from memory once verified (tokens.py)
        if found is None:
            return None
        services.touch_token(found)
        request.auth_token = found  # logout ends this one
        return found.account


bearer = BearerAuth()
