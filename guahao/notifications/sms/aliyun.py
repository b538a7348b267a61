"""A client of Aliyun's 短信服务 SendSms (dysmsapi, API version 2017-05-25, RPC style), signed as
guahao.notifications.sms.signing describes.

One call, one attempt, with a timeout: the worker decides when to try again. `outcome_of` is the one
place that says which answers are worth another try, which are a configuration problem and which
mean this message can never go.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
from django.conf import settings

from guahao import metrics
from guahao.notifications.sms.signing import (
    ACTION,
    API_VERSION,
    TIMESTAMP_FORMAT,
    percent_encode,
    signature,
)


def wall_clock() -> dt.datetime:
    # The Timestamp is checked against the provider's real clock (±15 minutes), so it is this
    # machine's real time, not guahao.clock (which tests move by days).
    return dt.datetime.now(dt.UTC)


class Outcome(enum.Enum):
    SENT = "sent"
    RETRY = "retry"  # the provider is busy, throttling, or did not answer: try again later
    CONFIGURATION = "configuration"  # keys, sign name or template wrong: staff must fix it
    UNDELIVERABLE = "undeliverable"  # this message to this number can never go


# Aliyun's codes by what they mean for us. Anything not listed counts as RETRY (and is logged
# with its code), so an unknown answer never loses a message.
UNDELIVERABLE_CODES = frozenset(
    {
        "isv.MOBILE_NUMBER_ILLEGAL",
        "isv.BLACK_KEY_CONTROL_LIMIT",  # a variable holds a word the provider blocks
        "isv.PARAM_LENGTH_LIMIT",
        "isv.PARAM_NOT_SUPPORT_URL",
        "isv.DENY_IP_RANGE",
    }
)
CONFIGURATION_CODES = frozenset(
    {
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "InvalidTimeStamp.Expired",  # this machine's clock is off by more than 15 minutes
        "InvalidTimeStamp.Format",
        "InvalidApi.NotFound",
        "Forbidden.RAM",
        "isp.RAM_PERMISSION_DENY",
        "isv.SMS_TEMPLATE_ILLEGAL",
        "isv.SMS_SIGNATURE_ILLEGAL",
        "isv.TEMPLATE_MISSING_PARAMETERS",
        "isv.INVALID_JSON_PARAM",
        "isv.INVALID_PARAMETERS",
        "isv.OUT_OF_SERVICE",
        "isv.AMOUNT_NOT_ENOUGH",
        "isv.PRODUCT_UN_SUBSCRIPT",
        "isv.PRODUCT_UNSUBSCRIBE",
        "isv.ACCOUNT_NOT_EXISTS",
        "isv.ACCOUNT_ABNORMAL",
    }
)


def outcome_of(code: str) -> Outcome:
    if code == "OK":
        return Outcome.SENT
    if code in UNDELIVERABLE_CODES:
        return Outcome.UNDELIVERABLE
    if code in CONFIGURATION_CODES or code.startswith("Missing"):
        return Outcome.CONFIGURATION
    return Outcome.RETRY  # isv.BUSINESS_LIMIT_CONTROL, Throttling*, isp.SYSTEM_ERROR, SignatureNonceUsed …


@dataclass(frozen=True)
class SendResult:
    """What the provider answered: Code "OK" and a BizId, or an error code and its message."""

    code: str
    message: str
    biz_id: str = ""
    request_id: str = ""
    http_status: int = 200

    @property
    def outcome(self) -> Outcome:
        return outcome_of(self.code)

    @property
    def summary(self) -> str:
        """Code and message for logs and last_error. SignatureDoesNotMatch's message ends with the
        provider's string to sign, which holds the phone number: that part is left out."""
        message = self.message.split(" server string to sign", 1)[0]
        return f"{self.code}: {message}"[:200]


class SmsUnavailable(Exception):
    """No usable answer: a timeout, a refused connection, a 5xx, or a body that is not Aliyun's JSON."""


@dataclass(frozen=True)
class AliyunSmsClient:
    endpoint: str
    access_key_id: str
    access_key_secret: str
    timeout: float = 5.0
    region_id: str = "cn-hangzhou"
    now: Callable[[], dt.datetime] = wall_clock

    @classmethod
    def from_settings(cls) -> AliyunSmsClient:
        return cls(
            endpoint=settings.SMS_ENDPOINT,
            access_key_id=settings.SMS_ACCESS_KEY_ID,
            access_key_secret=settings.SMS_ACCESS_KEY_SECRET,
            timeout=settings.SMS_TIMEOUT,
        )

    def signed_params(self, *, phone: str, sign_name: str, template_code: str, template_param: Mapping[str, str], out_id: str = "") -> dict[str, str]:
        """The form SendSms is posted with, Signature included."""
        params = {
            "AccessKeyId": self.access_key_id,
            "Action": ACTION,
            "Format": "JSON",
            "RegionId": self.region_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": uuid.uuid4().hex,
            "SignatureVersion": "1.0",
            "Timestamp": self.now().astimezone(dt.UTC).strftime(TIMESTAMP_FORMAT),
            "Version": API_VERSION,
            "PhoneNumbers": phone,
            "SignName": sign_name,
            "TemplateCode": template_code,
            # Aliyun wants every variable's value as a JSON string.
            "TemplateParam": json.dumps({k: str(v) for k, v in template_param.items()}, ensure_ascii=False, separators=(",", ":")),
        }
        if out_id:
            params["OutId"] = out_id
        params["Signature"] = signature(self.access_key_secret, "POST", params)
        return params

    def send_sms(self, *, phone: str, sign_name: str, template_code: str, template_param: Mapping[str, str], out_id: str = "") -> SendResult:
        """One SendSms call. Returns the provider's answer (check `.outcome`); raises SmsUnavailable
        when there is none to read. Never retries: a retry after a lost reply could send twice."""
        form = self.signed_params(phone=phone, sign_name=sign_name, template_code=template_code, template_param=template_param, out_id=out_id)
        body = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in form.items())
        try:
            with metrics.outside_call("sms") as call:
                response = httpx.post(
                    self.endpoint.rstrip("/") + "/",
                    content=body.encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Accept": "application/json"},
                    timeout=self.timeout,
                )
                if response.status_code >= 500:
                    call.failed()
        except httpx.HTTPError as exc:
            raise SmsUnavailable(f"{type(exc).__name__}: {exc}"[:200]) from exc
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict) or not isinstance(document.get("Code"), str):
            raise SmsUnavailable(f"HTTP {response.status_code} without Aliyun's answer")
        if response.status_code >= 500:
            raise SmsUnavailable(f"HTTP {response.status_code} {document.get('Code')}")
        return SendResult(
            code=document["Code"],
            message=str(document.get("Message", "")),
            biz_id=str(document.get("BizId", "")),
            request_id=str(document.get("RequestId", "")),
            http_status=response.status_code,
        )


def configured() -> bool:
    """Whether the deployment has SMS credentials at all (GUAHAO_SMS_ACCESS_KEY_ID/SECRET)."""
    return bool(settings.SMS_ACCESS_KEY_ID and settings.SMS_ACCESS_KEY_SECRET)
