"""Bearer tokens checked from memory on the hot paths (放号: every request of a burst carries one).

A process that has verified a token against the database remembers it (`KnownTokens`): the
account it signs in, until when it lives (`expires_at`), when its use was last written. The
next requests with it read nothing. What ends a token before its time is written down as a
`TokenRevocation` in the same transaction (signals below: sign-out, a device ended, all devices
ended, an account switched off or removed), and every process reads the revocations of the last
moments at most once a second, so an ended token stops working everywhere within about a second.
A remembered token is also read again after `RECHECK`, whatever happened.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from guahao import clock, pii
from guahao.patients.models import Account, AuthToken, TokenRevocation

# How often a process reads new revocations, and how far back each read looks (a revocation
# committed late, after a later one was read, is still seen).
POLL_SECONDS = 1.0
OVERLAP = dt.timedelta(seconds=10)
# A remembered token is verified against the database again after this long in any case.
RECHECK = dt.timedelta(seconds=60)
# Past this many remembered tokens, those due for a recheck are forgotten first, then all.
_MAX_KNOWN = 200_000

_ACCOUNT_FIELDS = tuple(f.attname for f in Account._meta.concrete_fields)
_TOKEN_FIELDS = tuple(f.attname for f in AuthToken._meta.concrete_fields)


@dataclass
class _Known:
    token: dict
    account: dict
    checked_at: dt.datetime


def _loaded(model: type, values: dict):
    """A fresh model instance per request from remembered values: no request can change another's."""
    instance = model(**values)
    instance._state.adding = False
    instance._state.db = "default"
    return instance


class KnownTokens:
    def __init__(self) -> None:
        self._known: dict[str, _Known] = {}
        self._lock = threading.Lock()
        self._polling = threading.Lock()
        self._polled_at = 0.0  # monotonic
        self._seen_until: dt.datetime | None = None

    def token_for_key(self, key: str) -> AuthToken | None:
        """The live token (with `.account` loaded) for `key`, or None; from memory when this process
        has verified it lately."""
        from guahao.patients.selectors import token_for_key

        self._poll()
        key_hash = pii.token_hash(key)
        now = clock.now()
        known = self._known.get(key_hash)
        if known is not None and now < known.token["expires_at"] and known.checked_at <= now < known.checked_at + RECHECK:
            token = _loaded(AuthToken, known.token)
            token.account = _loaded(Account, known.account)
            return token
        token = token_for_key(key)
        if token is None:
            self._known.pop(key_hash, None)
            return None
        self._remember(key_hash, token, now)
        return token

    def touched(self, token: AuthToken) -> None:
        """The token's use was written (touch_token): remember its new life."""
        known = self._known.get(token.key_hash)
        if known is not None:
            known.token = {**known.token, "last_used_at": token.last_used_at, "expires_at": token.expires_at}

    def _remember(self, key_hash: str, token: AuthToken, now: dt.datetime) -> None:
        if len(self._known) >= _MAX_KNOWN:
            with self._lock:
                stale = [h for h, k in self._known.items() if now >= k.checked_at + RECHECK]
                for h in stale or list(self._known):
                    self._known.pop(h, None)
        self._known[key_hash] = _Known(
            token={name: getattr(token, name) for name in _TOKEN_FIELDS},
            account={name: getattr(token.account, name) for name in _ACCOUNT_FIELDS},
            checked_at=now,
        )

    def forget(self, *, key_hash: str = "", account_id: int | None = None) -> None:
        if key_hash:
            self._known.pop(key_hash, None)
        if account_id is not None:
            with self._lock:
                for h in [h for h, k in self._known.items() if k.token["account_id"] == account_id]:
                    self._known.pop(h, None)

    def _poll(self) -> None:
        if time.monotonic() - self._polled_at < POLL_SECONDS or not self._polling.acquire(blocking=False):
            return
        try:
            now = clock.now()
            since = (self._seen_until or now) - OVERLAP
            for key_hash, account_id in TokenRevocation.objects.filter(created_at__gte=since).values_list(
                "key_hash", "account_id"
            ):
                if key_hash:
                    self.forget(key_hash=key_hash)
                else:
                    self.forget(account_id=account_id)
            self._seen_until = now
            self._polled_at = time.monotonic()
        finally:
            self._polling.release()

    def clear(self) -> None:
        with self._lock:
            self._known.clear()
        self._seen_until = None
        self._polled_at = 0.0


known_tokens = KnownTokens()


# --- what ends a token early -----------------------------------------------------------------------


@receiver(post_delete, sender=AuthToken, dispatch_uid="token-revoked")
def _token_deleted(sender, instance: AuthToken, **kwargs) -> None:
    # Also sent for each token of a deleted account (the cascade) and for bulk deletes.
    TokenRevocation.objects.create(key_hash=instance.key_hash, account_id=instance.account_id, created_at=clock.now())
    known_tokens.forget(key_hash=instance.key_hash)


@receiver(post_save, sender=Account, dispatch_uid="account-switched-off")
def _account_saved(sender, instance: Account, created: bool, **kwargs) -> None:
    if not created and not instance.is_active:
        TokenRevocation.objects.create(key_hash="", account_id=instance.pk, created_at=clock.now())
        known_tokens.forget(account_id=instance.pk)
