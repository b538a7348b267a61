"""A simulator of WeChat's side of a 公众号, for tests and the demo (standard library only):

    python -m guahao.wechat.simulator --host 127.0.0.1 --port 9300 --state var/wechat-simulator.json

WeChat's endpoints, with its answers and error codes:
- GET  /cgi-bin/token?grant_type=client_credential&appid=&secret=  → access_token, expires_in 7200
  (40013 invalid appid, 40125 invalid appsecret, 40002 invalid grant_type). A new token retires the
  app's older ones after 5 minutes, as WeChat does.
- POST /cgi-bin/message/template/send?access_token=  → msgid (41001 missing token, 40001 invalid,
  42001 expired, 47001 not JSON, 40003 unknown openid, 43004 not a follower, 40037 unknown
  template_id, 47003 a field missing or too long); one message per (openid, client_msg_id).
- GET  /connect/oauth2/authorize?appid=&redirect_uri=&response_type=code&scope=snsapi_base&state=
  → a page "模拟微信授权" whose 允许 button returns to redirect_uri with code and state.
- GET  /sns/oauth2/access_token?appid=&secret=&code=&grant_type=authorization_code → openid
  (40029 invalid code, 40163 code been used; a code lives 5 minutes).

The control API under /_control/ (unsigned, so loopback only): GET state, GET messages?touser=,
POST apps {appid, secret}, POST templates {appid, template_id, keys}, POST follow / unfollow
{appid, openid}, POST codes {appid, openid} → {code}, POST tokens/expire {appid?}, POST faults
{fault: timeout|busy|api_limit|error|slow, api: token|send|oauth|"", times, latency_ms}, DELETE faults,
POST reset. The first line on stdout is "wechat-simulator: listening on http://HOST:PORT".
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from guahao.simulators import SimulatorHandler, loopback, serve
from guahao.simulators import SimulatorServer as BaseSimulatorServer

TOKEN_SECONDS = 7200
OLD_TOKEN_GRACE = 300  # an app's previous token keeps working this long after a refresh
CODE_SECONDS = 300
MAX_BODY = 1 << 16

# The development 公众号: its AppID, secret, a follower and a template for every demo topic.
DEMO_APP_ID = "wx5e1fd0c0ffee0001"
DEMO_APP_SECRET = "0123456789abcdef0123456789abcdef"
DEMO_FOLLOWER = "oDemo-Patient-000000000000001"
DEMO_TEMPLATES = {
    # 预约成功通知: 就诊人, 科室, 就诊时间, 挂号单号
    "demo-booked-TPL0000000000000000000000000001": ["thing1", "thing2", "time3", "character_string4"],
    # 就诊提醒: 就诊人, 科室, 就诊时间, 就诊地点
    "demo-remind-TPL0000000000000000000000000002": ["thing1", "thing2", "time3", "thing4"],
    # 挂号取消通知: 就诊人, 就诊信息, 说明
    "demo-cancel-TPL0000000000000000000000000003": ["thing1", "thing2", "thing3"],
}
_LIMITS = {"thing": 20, "character_string": 32, "number": 32, "letter": 32, "symbol": 5, "amount": 32,
           "phrase": 5, "phone_number": 17, "car_number": 8, "const": 20, "name": 10, "time": 32, "date": 32}
_FIELD_TYPE = re.compile(r"^([a-z_]+?)\d*$")

FAULTS = {
    "timeout": "accept and never answer (hold the connection latency_ms, default 30000)",
    "busy": 'answer {"errcode": -1, "errmsg": "system error"}',
    "api_limit": 'answer {"errcode": 45009, "errmsg": "reach max api daily quota limit"}',
    "error": "HTTP 500",
    "slow": "wait latency_ms, then answer as usual",
}
APIS = ("token", "send", "oauth")


class Hang(Exception):
    def __init__(self, seconds: float):
        self.seconds = seconds


def _error(errcode: int, errmsg: str) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": f"{errmsg} rid: {secrets.token_hex(4)}-{secrets.token_hex(4)}"}


class WechatPlatform:
    """What WeChat holds for the simulated apps; every method is one request's answer."""

    def __init__(self, *, state_path: Path | None = None) -> None:
        self.state_path = state_path
        self._mutex = threading.RLock()
        self.reset(save=False)
        if state_path is not None and state_path.exists():
            self._restore(json.loads(state_path.read_text(encoding="utf-8")))

    # --- state ------------------------------------------------------------------------------

    def reset(self, *, save: bool = True) -> None:
        with self._mutex:
            self.apps: dict[str, dict[str, Any]] = {
                DEMO_APP_ID: {
                    "secret": DEMO_APP_SECRET,
                    "templates": {k: list(v) for k, v in DEMO_TEMPLATES.items()},
                    "users": {DEMO_FOLLOWER: True},  # openid → follows
                }
            }
            self.tokens: dict[str, dict[str, Any]] = {}
            self.codes: dict[str, dict[str, Any]] = {}
            self.messages: list[dict[str, Any]] = []
            self.sent_ids: dict[str, int] = {}  # app/openid/client_msg_id → msgid
            self.calls: dict[str, int] = dict.fromkeys(APIS, 0)
            self.faults: list[dict[str, Any]] = []
            self._msgid = 2_000_000_000
        if save:
            self._save()

    def _restore(self, document: dict[str, Any]) -> None:
        for key in ("apps", "tokens", "messages", "sent_ids"):
            if key in document:
                setattr(self, key, document[key])
        self._msgid = max([self._msgid, *(m["msgid"] for m in self.messages)])

    def _save(self) -> None:
        if self.state_path is None:
            return
        with self._mutex:
            text = json.dumps(
                {"apps": self.apps, "tokens": self.tokens, "messages": self.messages, "sent_ids": self.sent_ids},
                ensure_ascii=False, indent=1,
            )
            partial = self.state_path.with_suffix(self.state_path.suffix + ".tmp")
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, self.state_path)

    def state(self) -> dict[str, Any]:
        with self._mutex:
            return json.loads(json.dumps({
                "apps": {a: {**v, "secret": "***"} for a, v in self.apps.items()},
                "tokens": [{"appid": t["appid"], "expires_at": t["expires_at"]} for t in self.tokens.values()],
                "messages": self.messages,
                "calls": self.calls,
                "faults": self.faults,
            }))

    # --- control ----------------------------------------------------------------------------

    def add_app(self, appid: str, secret: str) -> None:
        if not appid or not secret:
            raise ValueError("appid and secret are required")
        with self._mutex:
            app = self.apps.setdefault(appid, {"secret": secret, "templates": {}, "users": {}})
            app["secret"] = secret
        self._save()

    def add_template(self, appid: str, template_id: str, keys: list[str]) -> None:
        if not template_id or not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise ValueError("template_id and keys (a list of field names) are required")
        with self._mutex:
            self._app(appid)["templates"][template_id] = list(keys)
        self._save()

    def set_following(self, appid: str, openid: str, follows: bool) -> None:
        if not openid:
            raise ValueError("openid is required")
        with self._mutex:
            self._app(appid)["users"][openid] = follows
        self._save()

    def mint_code(self, appid: str, openid: str) -> str:
        if not openid:
            raise ValueError("openid is required")
        with self._mutex:
            app = self._app(appid)
            app["users"].setdefault(openid, False)  # snsapi_base works for non-followers too
            code = secrets.token_hex(16)
            self.codes[code] = {"appid": appid, "openid": openid, "expires_at": time.time() + CODE_SECONDS, "used": False}
        self._save()
        return code

    def expire_tokens(self, appid: str = "") -> int:
        with self._mutex:
            hit = [t for t in self.tokens.values() if not appid or t["appid"] == appid]
            for token in hit:
                token["expires_at"] = time.time() - 1
        self._save()
        return len(hit)

    def add_fault(self, document: dict[str, Any]) -> None:
        fault = str(document.get("fault", ""))
        api = str(document.get("api", ""))
        if fault not in FAULTS:
            raise ValueError(f"fault is one of {sorted(FAULTS)}")
        if api and api not in APIS:
            raise ValueError(f"api is one of {list(APIS)} or empty for any")
        with self._mutex:
            self.faults.append({"fault": fault, "api": api, "times": int(document.get("times", 1)),
                                "latency_ms": document.get("latency_ms")})

    def clear_faults(self) -> None:
        with self._mutex:
            self.faults.clear()

    def _app(self, appid: str) -> dict[str, Any]:
        app = self.apps.get(appid)
        if app is None:
            raise ValueError(f"unknown appid {appid!r}")
        return app

    def _fault(self, api: str) -> dict[str, Any] | None:
        with self._mutex:
            self.calls[api] = self.calls.get(api, 0) + 1
            for fault in self.faults:
                if fault["api"] in ("", api) and fault["times"] != 0:
                    fault["times"] -= 1
                    if fault["times"] == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def _faulted(self, api: str) -> tuple[int, dict[str, Any]] | None:
        fault = self._fault(api)
        if fault is None:
            return None
        if fault["fault"] == "timeout":
            raise Hang((fault["latency_ms"] or 30000) / 1000)
        if fault["latency_ms"]:
            time.sleep(fault["latency_ms"] / 1000)
        if fault["fault"] == "slow":
            return None
        if fault["fault"] == "busy":
            return 200, _error(-1, "system error")
        if fault["fault"] == "api_limit":
            return 200, _error(45009, "reach max api daily quota limit")
        return 500, {"message": "internal server error"}

    # --- WeChat's API -----------------------------------------------------------------------

    def _credential_error(self, params: dict[str, str]) -> dict[str, Any] | None:
        """WeChat's answer to a wrong appid or secret, else None (call under the mutex)."""
        app = self.apps.get(params.get("appid", ""))
        if app is None:
            return _error(40013, "invalid appid")
        if params.get("secret") != app["secret"]:
            return _error(40125, "invalid appsecret")
        return None

    def token(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if (faulted := self._faulted("token")) is not None:
            return faulted
        if params.get("grant_type") != "client_credential":
            return 200, _error(40002, "invalid grant_type")
        with self._mutex:
            if (refused := self._credential_error(params)) is not None:
                return 200, refused
            now = time.time()
            for old in self.tokens.values():
                if old["appid"] == params["appid"]:
                    old["expires_at"] = min(old["expires_at"], now + OLD_TOKEN_GRACE)
            value = secrets.token_urlsafe(96)[:128]
            self.tokens[value] = {"appid": params["appid"], "expires_at": now + TOKEN_SECONDS}
        self._save()
        return 200, {"access_token": value, "expires_in": TOKEN_SECONDS}

    def send_template(self, params: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        if (faulted := self._faulted("send")) is not None:
            return faulted
        with self._mutex:
            value = params.get("access_token", "")
            if not value:
                return 200, _error(41001, "access_token missing")
            token = self.tokens.get(value)
            if token is None:
                return 200, _error(40001, "invalid credential, access_token is invalid or not latest")
            if token["expires_at"] <= time.time():
                return 200, _error(42001, "access_token expired")
            app = self.apps[token["appid"]]
            try:
                message = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return 200, _error(47001, "data format error")
            if not isinstance(message, dict):
                return 200, _error(47001, "data format error")
            openid = message.get("touser")
            if not isinstance(openid, str) or openid not in app["users"]:
                return 200, _error(40003, "invalid openid")
            if not app["users"][openid]:
                return 200, _error(43004, "require subscribe")
            keys = app["templates"].get(message.get("template_id"))
            if keys is None:
                return 200, _error(40037, "invalid template_id")
            refused = self._check_data(keys, message.get("data"))
            if refused:
                return 200, _error(47003, f"argument invalid! {refused}")
            client_msg_id = str(message.get("client_msg_id", ""))
            seen_key = f"{token['appid']}/{openid}/{client_msg_id}"
            if client_msg_id and seen_key in self.sent_ids:
                return 200, {"errcode": 0, "errmsg": "ok", "msgid": self.sent_ids[seen_key]}
            self._msgid += 1
            self.messages.append({
                "msgid": self._msgid,
                "appid": token["appid"],
                "touser": openid,
                "template_id": message["template_id"],
                "url": message.get("url", ""),
                "data": message["data"],
                "client_msg_id": client_msg_id,
                "at": time.time(),
            })
            if client_msg_id:
                self.sent_ids[seen_key] = self._msgid
            msgid = self._msgid
        self._save()
        return 200, {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    @staticmethod
    def _check_data(keys: list[str], data: Any) -> str:
        if not isinstance(data, dict):
            return "data is not an object"
        for key in keys:
            item = data.get(key)
            if not isinstance(item, dict) or not isinstance(item.get("value"), str):
                return f"data.{key}.value is missing"
            kind = _FIELD_TYPE.match(key)
            limit = _LIMITS.get(kind.group(1), 200) if kind else 200
            if len(item["value"]) > limit:
                return f"data.{key}.value exceeds limit"
        return ""

    def exchange_code(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if (faulted := self._faulted("oauth")) is not None:
            return faulted
        if params.get("grant_type") != "authorization_code":
            return 200, _error(40002, "invalid grant_type")
        with self._mutex:
            if (refused := self._credential_error(params)) is not None:
                return 200, refused
            code = self.codes.get(params.get("code", ""))
            if code is None or code["appid"] != params["appid"] or code["expires_at"] <= time.time():
                return 200, _error(40029, "invalid code")
            if code["used"]:
                return 200, _error(40163, "code been used")
            code["used"] = True
        return 200, {
            "access_token": secrets.token_urlsafe(48),
            "expires_in": TOKEN_SECONDS,
            "refresh_token": secrets.token_urlsafe(48),
            "openid": code["openid"],
            "scope": "snsapi_base",
        }


_PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>模拟微信授权</title>
<style>body{{font-family:sans-serif;max-width:420px;margin:40px auto;padding:0 16px}}
button{{width:100%;padding:12px;background:#07c160;color:#fff;border:0;border-radius:6px;font-size:17px}}
input{{width:100%;padding:8px;box-sizing:border-box}}</style></head><body>
<h2>模拟微信授权</h2><p>{app}将获取你的公众号身份（openid），用于登录挂号服务。</p>
<form method="get" action="/connect/oauth2/authorize/allow">
{hidden}<p><label>模拟的微信用户 openid<br><input name="openid" value="{openid}"></label></p>
<p><label><input type="checkbox" name="follow" value="1" checked style="width:auto"> 同时关注公众号（可接收模板消息）</label></p>
<button type="submit">允许</button></form></body></html>"""


class Handler(SimulatorHandler):
    server: SimulatorServer

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(413, {"errcode": 44002, "errmsg": "empty post data"})
            return
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        params = dict(parse_qsl(query, keep_blank_values=True))
        platform = self.server.platform
        try:
            if path.startswith("/_control/"):
                self._control(method, path.removeprefix("/_control"), params, body)
            elif (method, path) == ("GET", "/cgi-bin/token"):
                self._json(*platform.token(params))
            elif (method, path) == ("POST", "/cgi-bin/message/template/send"):
                self._json(*platform.send_template(params, body))
            elif (method, path) == ("GET", "/sns/oauth2/access_token"):
                self._json(*platform.exchange_code(params))
            elif (method, path) == ("GET", "/connect/oauth2/authorize"):
                self._authorize_page(params)
            elif (method, path) == ("GET", "/connect/oauth2/authorize/allow"):
                self._allow(params)
            else:
                self._json(404, {"errcode": 404, "errmsg": f"no {method} {path}"})
        except Hang as hang:
            self.server.stopping.wait(hang.seconds)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def _authorize_page(self, params: dict[str, str]) -> None:
        platform = self.server.platform
        appid = params.get("appid", "")
        problem = ""
        if appid not in platform.apps:
            problem = "10003 redirect_uri 参数错误或 appid 无效"
        elif params.get("response_type") != "code" or params.get("scope") not in ("snsapi_base", "snsapi_userinfo"):
            problem = "10005 scope 参数错误"
        elif urlsplit(params.get("redirect_uri", "")).scheme not in ("http", "https"):
            problem = "10003 redirect_uri 参数错误"
        if problem:
            self._html(400, f"<!doctype html><meta charset=utf-8><title>授权失败</title><p>{html.escape(problem)}</p>")
            return
        users = platform.apps[appid]["users"]
        suggested = next((o for o, follows in users.items() if follows), DEMO_FOLLOWER)
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(params.get(name, ""))}">'
            for name in ("appid", "redirect_uri", "state")
        )
        self._html(200, _PAGE.format(app=html.escape(appid), hidden=hidden, openid=html.escape(suggested)))

    def _allow(self, params: dict[str, str]) -> None:
        platform = self.server.platform
        try:
            if params.get("follow") == "1":
                platform.set_following(params.get("appid", ""), params.get("openid", ""), True)
            code = platform.mint_code(params.get("appid", ""), params.get("openid", ""))
        except ValueError as error:
            self._html(400, f"<!doctype html><meta charset=utf-8><p>{html.escape(str(error))}</p>")
            return
        target = params.get("redirect_uri", "")
        joiner = "&" if "?" in target else "?"
        self.send_response(302)
        self.send_header("Location", f"{target}{joiner}{urlencode({'code': code, 'state': params.get('state', '')})}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _control(self, method: str, path: str, params: dict[str, str], body: bytes) -> None:
        platform = self.server.platform
        try:
            document = json.loads(body or b"{}") if method == "POST" else {}
            if not isinstance(document, dict):
                raise ValueError("the body is a JSON object")
            appid = str(document.get("appid", DEMO_APP_ID))
            if (method, path) == ("GET", "/state"):
                answer: Any = platform.state()
            elif (method, path) == ("GET", "/messages"):
                wanted = params.get("touser", "")
                answer = {"messages": [m for m in platform.state()["messages"] if not wanted or m["touser"] == wanted]}
            elif (method, path) == ("POST", "/apps"):
                platform.add_app(str(document.get("appid", "")), str(document.get("secret", "")))
                answer = {"appid": document["appid"]}
            elif (method, path) == ("POST", "/templates"):
                platform.add_template(appid, str(document.get("template_id", "")), document.get("keys"))
                answer = {"template_id": document["template_id"]}
            elif (method, path) in (("POST", "/follow"), ("POST", "/unfollow")):
                platform.set_following(appid, str(document.get("openid", "")), path == "/follow")
                answer = {"openid": document["openid"], "follows": path == "/follow"}
            elif (method, path) == ("POST", "/codes"):
                answer = {"code": platform.mint_code(appid, str(document.get("openid", "")))}
            elif (method, path) == ("POST", "/tokens/expire"):
                answer = {"expired": platform.expire_tokens(str(document.get("appid", "")))}
            elif (method, path) == ("POST", "/faults"):
                platform.add_fault(document)
                answer = {"faults": platform.state()["faults"]}
            elif (method, path) == ("DELETE", "/faults"):
                platform.clear_faults()
                answer = {"faults": []}
            elif (method, path) == ("POST", "/reset"):
                platform.reset()
                answer = {"reset": True}
            else:
                self._json(404, {"message": f"no {method} /_control{path}"})
                return
        except (ValueError, KeyError, TypeError) as error:
            self._json(400, {"message": str(error)})
            return
        self._json(200, answer)

    def _json(self, status: int, document: Any) -> None:
        self._send(status, json.dumps(document, ensure_ascii=False).encode(), "application/json; encoding=utf-8")

    def _html(self, status: int, page: str) -> None:
        self._send(status, page.encode(), "text/html; charset=utf-8")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class SimulatorServer(BaseSimulatorServer):
    def __init__(self, address: tuple[str, int], platform: WechatPlatform, *, verbose: bool = False) -> None:
        self.platform = platform
        super().__init__(address, Handler, verbose=verbose)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wechat-simulator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=9300, help="0 picks a free port")
    parser.add_argument("--state", type=Path, help="keep apps, followers, tokens and sent messages in this JSON file")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    options = parser.parse_args(argv)
    try:
        host = loopback(options.host)
        platform = WechatPlatform(state_path=options.state)
    except (ValueError, OSError) as error:
        parser.exit(2, f"wechat-simulator: {error}\n")
    serve(SimulatorServer((host, options.port), platform, verbose=options.verbose), name="wechat-simulator")

if __name__ == "__main__":
    main(sys.argv[1:])
