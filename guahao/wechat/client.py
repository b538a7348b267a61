"""A client of the 公众号 HTTP API: access_token, 模板消息 and the 网页授权 code exchange.

One call, one attempt, with a timeout; the only retry is the token one in services.send_template.
WeChat answers HTTP 200 with {"errcode": …, "errmsg": …} for its own errors: those raise
WechatApiError; no usable answer (timeout, refused connection, 5xx, not JSON) raises
WechatUnavailable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from guahao import metrics

# The access_token is wrong, expired or not the latest: fetch a new one and try once more.
TOKEN_ERRORS = frozenset({40001, 42001, 40014})
# This message to this user can never go.
RECIPIENT_ERRORS = frozenset({43004, 40003, 43101})
# Staff must fix the console's AppID, secret or template: retried later, logged as an error.
CONFIGURATION_ERRORS = frozenset({40013, 40125, 40164, 40037, 47001, 47003, 41030, 40036})


class WechatApiError(Exception):
    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode}: {errmsg}")
        self.errcode, self.errmsg = errcode, errmsg


class WechatUnavailable(Exception):
    """No usable answer from WeChat."""


@dataclass(frozen=True)
class WechatClient:
    app_id: str
    app_secret: str
    api_base: str = "https://api.weixin.qq.com"
    timeout: float = 5.0

    def fetch_access_token(self) -> tuple[str, int]:
        """A new access_token and its lifetime in seconds (7200). Invalidates the previous one."""
        answer = self._call(
            "GET",
            "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.app_id, "secret": self.app_secret},
        )
        return str(answer["access_token"]), int(answer.get("expires_in", 7200))

    def send_template(self, *, access_token: str, body: dict[str, Any]) -> str:
        """POST a template message; returns WeChat's msgid."""
        answer = self._call(
            "POST", "/cgi-bin/message/template/send", params={"access_token": access_token}, document=body
        )
        return str(answer.get("msgid", ""))

    def exchange_code(self, code: str) -> str:
        """The openid a 网页授权 code stands for (snsapi_base). A code works once, for 5 minutes."""
        answer = self._call(
            "GET",
            "/sns/oauth2/access_token",
            params={"appid": self.app_id, "secret": self.app_secret, "code": code, "grant_type": "authorization_code"},
        )
        openid = str(answer.get("openid", ""))
        if not openid:
            raise WechatUnavailable("网页授权应答没有 openid")
        return openid

    def _call(self, method: str, path: str, *, params: dict[str, str], document: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.api_base.rstrip("/") + path
        try:
            with metrics.outside_call("wechat") as call:
                if document is None:
                    response = httpx.request(method, url, params=params, timeout=self.timeout)
                else:
                    # UTF-8 JSON with the Chinese as it is: WeChat counts characters, not escapes.
                    content = json.dumps(document, ensure_ascii=False).encode()
                    response = httpx.request(
                        method, url, params=params, content=content, timeout=self.timeout,
                        headers={"Content-Type": "application/json; charset=utf-8"},
                    )
                if response.status_code != 200:
                    call.failed()
        except httpx.HTTPError as exc:
            raise WechatUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise WechatUnavailable(f"HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError as exc:
            raise WechatUnavailable("应答不是 JSON") from exc
        if not isinstance(answer, dict):
            raise WechatUnavailable("应答不是 JSON 对象")
        errcode = int(answer.get("errcode") or 0)
        if errcode != 0:
            raise WechatApiError(errcode, str(answer.get("errmsg", "")))
        return answer
