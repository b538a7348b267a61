"""A real-name verification service (实名核验) reached over HTTP: POST {"name", "id_type",
"id_number"} as signed JSON (guahao.signed_post) to GUAHAO_REALNAME_URL with GUAHAO_REALNAME_SECRET.
It answers 200 {"match": true} or {"match": false, "reason": "<Chinese sentence for the patient>"}.
Anything else (no answer in time, an error status, another body) means nothing is known."""

from __future__ import annotations

import logging

from django.conf import settings

from guahao.patients.realname.base import RealnameRejected, RealnameUnavailable
from guahao.signed_post import Unreachable, post_json

log = logging.getLogger("guahao.realname")


class HttpRealnameVerifier:
    def verify(self, *, name: str, id_type: str, id_number: str) -> None:
        try:
            answer = post_json(
                settings.REALNAME_URL,
                {"name": name, "id_type": id_type, "id_number": id_number},
                secret=settings.REALNAME_SECRET,
                timeout=settings.REALNAME_TIMEOUT,
            )
        except Unreachable as exc:
            log.warning("real-name service did not answer", extra={"error": str(exc)[:200]})
            raise RealnameUnavailable("real-name service did not answer") from exc
        if not answer.ok:
            log.warning("real-name service failed", extra={"status": answer.status})
            raise RealnameUnavailable(f"real-name service answered {answer.status}")
        try:
            verdict = answer.json()
            match = verdict["match"]
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("real-name service answered something else", extra={"status": answer.status})
            raise RealnameUnavailable("real-name service answer not understood") from exc
        if match is True:
            return
        if match is False:
            reason = verdict.get("reason")
            raise RealnameRejected(reason) if isinstance(reason, str) and reason else RealnameRejected()
        raise RealnameUnavailable("real-name service answer not understood")
