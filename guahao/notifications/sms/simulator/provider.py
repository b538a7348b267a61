"""What one simulated Aliyun SMS account holds and decides: access keys, approved sign names and
templates, the messages it sent, per-phone send history, injected faults and seen nonces.
`SmsProvider.send` answers one SendSms request as (HTTP status, JSON document)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from guahao.notifications.sms.signing import (
    ACTION,
    API_VERSION,
    TIMESTAMP_FORMAT,
    signature,
    string_to_sign,
)

TIMESTAMP_TOLERANCE = dt.timedelta(minutes=15)
NONCE_MEMORY_SECONDS = 30 * 60
HOST_ID = "dysmsapi.aliyuncs.com"
COMMON = ("AccessKeyId", "Action", "SignatureMethod", "SignatureNonce", "SignatureVersion", "Timestamp", "Version", "Signature")
# Per phone, as Aliyun's default flow control for one sign name: 1 a minute, 5 an hour, 10 a day.
RATE_LIMITS = ((60, 1, "分钟"), (3600, 5, "小时"), (86400, 10, "天"))
# Mainland mobile numbers, optionally with the country code.
MOBILE = re.compile(r"(?:\+?86|0086)?1[3-9][0-9]{9}")
VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)\}")

FAULTS = {
    "timeout": "accept and never answer (hold the connection latency_ms, default 30000)",
    "error": "HTTP 500 InternalError",
    "unavailable": "HTTP 503 ServiceUnavailable",
    "throttling": "HTTP 400 Throttling.User (the account's API flow control)",
}

# A development account's approved sign name and templates (codes are the simulator's own).
DEMO_SIGNS = ["医院挂号"]
DEMO_TEMPLATES = {
    "SMS_900000001": "您的验证码为${code}，5分钟内有效，请勿告诉他人。",
    "SMS_900000002": "就诊人${name}已预约${hospital}${dept}，就诊时间${time}，第${seq}号，挂号单号${no}，请按时到院取号。",
    "SMS_900000003": "就诊提醒：就诊人${name}将于${time}在${hospital}${dept}就诊（第${seq}号，${place}），请提前到院取号。",
    "SMS_900000004": "就诊人${name}${visit}的挂号已取消，挂号费将原路退回。",
    "SMS_900000005": "停诊通知：就诊人${name}${visit}的挂号因医生停诊已取消，挂号费将全额退回。",
}


@dataclass
class Fault:
    fault: str
    times: int = 1  # -1: until cleared
    latency_ms: int | None = None


class Hang(Exception):
    """Answer nothing: hold the connection for `seconds`, then close it."""

    def __init__(self, seconds: float):
        self.seconds = seconds


class SmsProvider:
    def __init__(self, *, keys: Mapping[str, str], state_path: Path | None = None) -> None:
        self.keys = dict(keys)
        self.state_path = state_path
        self._mutex = threading.Lock()
        self._nonces: dict[str, float] = {}
        self._faults: list[Fault] = []
        self._biz = 0
        self.offset = 0.0  # seconds the control endpoint moved the rate-limit clock forward
        self.reset(save=False)
        if state_path is not None and state_path.exists():
            self._restore(json.loads(state_path.read_text(encoding="utf-8")))

    # --- state ----------------------------------------------------------------------------------

    def reset(self, *, save: bool = True) -> None:
        with self._mutex:
            self.signs: list[str] = list(DEMO_SIGNS)
            self.templates: dict[str, str] = dict(DEMO_TEMPLATES)
            self.sent: list[dict[str, Any]] = []
            self.history: dict[str, list[float]] = {}
            self.calls: dict[str, int] = {}
            self._faults.clear()
            self._nonces.clear()
            self.offset = 0.0
        if save:
            self._save()

    def _restore(self, document: dict[str, Any]) -> None:
        self.signs = list(document.get("signs", self.signs))
        self.templates = dict(document.get("templates", self.templates))
        self.sent = list(document.get("sent", []))
        self.history = {phone: list(times) for phone, times in document.get("history", {}).items()}
        self._biz = len(self.sent)

    def _save(self) -> None:
        if self.state_path is None:
            return
        with self._mutex:
            document = {"signs": self.signs, "templates": self.templates, "sent": self.sent, "history": self.history}
            text = json.dumps(document, ensure_ascii=False, indent=1)
        partial = self.state_path.with_suffix(self.state_path.suffix + ".tmp")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, self.state_path)

    def state(self) -> dict[str, Any]:
        with self._mutex:
            return {
                "signs": list(self.signs),
                "templates": dict(self.templates),
                "sent": list(self.sent),
                "calls": dict(self.calls),
                "faults": [asdict(f) for f in self._faults],
                "offset_seconds": self.offset,
            }

    def add_template(self, code: str, content: str) -> None:
        if not code or not content:
            raise ValueError("code and content are required")
        with self._mutex:
            self.templates[code] = content
        self._save()

    def add_sign(self, name: str) -> None:
        if not name:
            raise ValueError("name is required")
        with self._mutex:
            if name not in self.signs:
                self.signs.append(name)
        self._save()

    def add_fault(self, document: Mapping[str, Any]) -> None:
        kind = document.get("fault")
        if kind not in FAULTS:
            raise ValueError(f"fault is one of {', '.join(FAULTS)}")
        times = int(document.get("times", 1))
        if times == 0 or times < -1:
            raise ValueError("times is a positive count, or -1 for until cleared")
        latency = document.get("latency_ms")
        with self._mutex:
            self._faults.append(Fault(fault=kind, times=times, latency_ms=None if latency is None else int(latency)))

    def clear_faults(self) -> None:
        with self._mutex:
            self._faults.clear()

    def advance(self, seconds: float) -> float:
        """Move the provider's rate-limit clock (not the Timestamp check, which is against real time)."""
        with self._mutex:
            self.offset += seconds
            return self.offset

    def _take_fault(self) -> Fault | None:
        with self._mutex:
            if not self._faults:
                return None
            fault = self._faults[0]
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.pop(0)
            return fault

    def _count(self, name: str) -> None:
        with self._mutex:
            self.calls[name] = self.calls.get(name, 0) + 1

    def _fresh_nonce(self, nonce: str) -> bool:
        moment = time.monotonic()
        with self._mutex:
            for seen, at in list(self._nonces.items()):
                if at < moment - NONCE_MEMORY_SECONDS:
                    del self._nonces[seen]
            if nonce in self._nonces:
                return False
            self._nonces[nonce] = moment
            return True

    # --- the API ----------------------------------------------------------------------------------

    def send(self, method: str, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer one request to the RPC endpoint, checked in the provider's order: the gateway
        (faults, parameters, key, timestamp, signature, nonce), then SendSms itself."""
        self._count("requests")
        fault = self._take_fault()
        if fault is not None:
            self._count(f"fault:{fault.fault}")
            if fault.fault == "timeout":
                raise Hang((fault.latency_ms if fault.latency_ms is not None else 30_000) / 1000)
            if fault.fault == "error":
                return _common(500, "InternalError", "The request processing has failed due to some unknown error, exception or failure.")
            if fault.fault == "unavailable":
                return _common(503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server.")
            return _common(400, "Throttling.User", "Request was denied due to user flow control.")
        refused = self._gateway(method, params)
        if refused is not None:
            self._count(refused[1]["Code"])
            return refused
        answer = self._send_sms(params)
        self._count(answer["Code"])
        return 200, answer

    def _gateway(self, method: str, params: Mapping[str, str]) -> tuple[int, dict[str, Any]] | None:
        for name in COMMON:
            if not params.get(name):
                return _common(400, f"Missing{name}", f"{name} is mandatory for this action.")
        if params["Action"] != ACTION or params["Version"] != API_VERSION:
            return _common(404, "InvalidApi.NotFound", "Specified api is not found, please check your url and method.")
        if params["SignatureMethod"] != "HMAC-SHA1":
            return _common(400, "InvalidSignatureMethod", "Specified signature method is not valid.")
        if params["SignatureVersion"] != "1.0":
            return _common(400, "InvalidSignatureVersion", "Specified signature version is not valid.")
        if params.get("Format", "JSON").upper() != "JSON":
            return _common(400, "InvalidParameter.Format", "Specified parameter format is not valid.")
        secret = self.keys.get(params["AccessKeyId"])
        if secret is None:
            return _common(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        try:
            stamp = dt.datetime.strptime(params["Timestamp"], TIMESTAMP_FORMAT).replace(tzinfo=dt.UTC)
        except ValueError:
            return _common(400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.")
        if abs(dt.datetime.now(dt.UTC) - stamp) > TIMESTAMP_TOLERANCE:
            return _common(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        if params["Signature"] != signature(secret, method, params):
            expected = string_to_sign(method, params)
            return _common(400, "SignatureDoesNotMatch", f"Specified signature is not matched with our calculation. server string to sign is:{expected}")
        if not self._fresh_nonce(params["SignatureNonce"]):
            return _common(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        for name in ("PhoneNumbers", "SignName", "TemplateCode"):
            if not params.get(name):
                return _common(400, f"Missing{name}", f"{name} is mandatory for this action.")
        return None

    def _send_sms(self, params: Mapping[str, str]) -> dict[str, Any]:
        phones = [p.strip() for p in params["PhoneNumbers"].split(",")]
        if len(phones) > 1000:
            return _business("isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制")
        if not all(MOBILE.fullmatch(p) for p in phones):
            return _business("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        with self._mutex:
            known_sign = params["SignName"] in self.signs
            content = self.templates.get(params["TemplateCode"])
        if not known_sign:
            return _business("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        if content is None:
            return _business("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        try:
            variables = json.loads(params.get("TemplateParam") or "{}")
        except ValueError:
            return _business("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
            return _business("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        missing = [name for name in VARIABLE.findall(content) if not variables.get(name)]
        if missing:
            return _business("isv.TEMPLATE_MISSING_PARAMETERS", f"模版缺少变量：{','.join(sorted(set(missing)))}")
        now = time.time() + self.offset
        with self._mutex:
            for phone in phones:
                for window, permits, label in RATE_LIMITS:
                    recent = [t for t in self.history.get(_national(phone), []) if t > now - window]
                    if len(recent) >= permits:
                        return _business("isv.BUSINESS_LIMIT_CONTROL", f"触发{label}级流控Permits:{permits}")
            self._biz += 1
            biz_id = f"{secrets.randbelow(10**12):012d}^{self._biz}"
            text = f"【{params['SignName']}】" + VARIABLE.sub(lambda m: variables.get(m.group(1), ""), content)
            for phone in phones:
                kept = [t for t in self.history.get(_national(phone), []) if t > now - 86400]
                self.history[_national(phone)] = [*kept, now]
                self.sent.append(
                    {
                        "biz_id": biz_id,
                        "phone": _national(phone),
                        "sign_name": params["SignName"],
                        "template_code": params["TemplateCode"],
                        "params": variables,
                        "out_id": params.get("OutId", ""),
                        "text": text,
                        "access_key_id": params["AccessKeyId"],
                        "sent_at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds"),
                    }
                )
        self._save()
        return {"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": _request_id()}


def _national(phone: str) -> str:
    return phone[-11:]


def _request_id() -> str:
    raw = secrets.token_hex(16).upper()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def _business(code: str, message: str) -> dict[str, Any]:
    # SendSms's own refusals come back as HTTP 200 with the code in the body.
    return {"Code": code, "Message": message, "RequestId": _request_id()}


def _common(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    # The API gateway's refusals: an HTTP error status and this shape.
    return status, {"RequestId": _request_id(), "HostId": HOST_ID, "Code": code, "Message": message, "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}"}
