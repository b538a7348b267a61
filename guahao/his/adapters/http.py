"""The HIS port over the JSON-over-HTTP gateway contract (docs/his.md, docs/his-gateway.openapi.yaml).

Every request is signed and every answer's signature is checked (guahao/his/wire.py). One call is
one HTTP request: no retries (not even of a failed connect) and no redirects, because the callers
decide what happens after a refusal or a silence (docs/his.md, "What guahao does with each answer").

How an answer maps onto the port:

- 2xx with a readable, signed JSON body → the result;
- 401 → HisRefused("BAD_SIGNATURE"), logged as an error: a configuration problem (hospital code or
  secret), and the gateway did nothing;
- another 4xx, signed, with one of the contract's codes → HisRefused(code);
- anything else (5xx, a 4xx without a contract code, a 3xx, a body that is not the contract's JSON,
  a missing or wrong answer signature, a timeout, a refused or dropped connection) → HisTimeout:
  the request may or may not have taken effect.

Log lines name the operation, our hold id, the status and the contract code, never the patient
nor the gateway's free-text message (it may name the patient).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import time
from typing import Any
from urllib.parse import urlencode

import httpx

from guahao import metrics
from guahao.his import wire
from guahao.his.base import (
    CardRequest,
    HisDepartment,
    HisDoctor,
    HisRefused,
    HisSession,
    HisSlot,
    HisTimeout,
    LockRequest,
    RegisterRequest,
    RegisterResult,
    RegistrationRecord,
    ScheduleBatch,
)

log = logging.getLogger("guahao.his")

CONTRACT_CODES = frozenset(v for k, v in vars(wire.Code).items() if k.isupper())

# guahao's document types (patients.Patient.IdType) → the contract's Patient.id_type.
ID_TYPES = {
    "resident": "resident_id",
    "hmt_residence": "residence_permit",  # 港澳台居民居住证
    "foreigner": "foreigner_permit",
}


def contract_id_type(id_type: str) -> str:
    return ID_TYPES.get(id_type, id_type)


class HttpHis:
    """One hospital's gateway. `has_lock_api=False` is a gateway without locks: guahao holds the
    number locally and registers it at payment (lock_slot makes no call and returns "", release
    is a no-op, register sends an empty lock id)."""

    def __init__(
        self,
        *,
        base_url: str,
        hospital_code: str,
        secret: str,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        has_lock_api: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.hospital_code = hospital_code
        self.has_lock_api = has_lock_api
        self._secret = secret
        self._client = httpx.Client(
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout),
            follow_redirects=False,
            # retries=0: a connect that failed is reported, never silently repeated. TCP_NODELAY:
            # httpx writes a request's headers and body separately, and Nagle's algorithm would
            # hold the body until the gateway's delayed ACK (40 ms on Linux) on every call.
            transport=transport
            or httpx.HTTPTransport(retries=0, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]),
            # The gateway is reached directly; proxy variables of the host must not reroute it.
            trust_env=False,
        )

    def __repr__(self) -> str:  # never the secret
        return f"HttpHis({self.base_url!r}, hospital={self.hospital_code!r}, lock_api={self.has_lock_api})"

    def close(self) -> None:
        self._client.close()

    # --- the port ------------------------------------------------------------------------------

    def lock_slot(self, request: LockRequest) -> str:
        if not self.has_lock_api:
            return ""  # the local claim is the lock until payment
        answer = self._call(
            "lock",
            "POST",
            wire.LOCKS,
            hold_id=request.hold_id,
            payload={
                "hold_id": request.hold_id,
                "session_code": request.session_code,
                "slot_code": request.slot_code,
                "slot_seq": request.slot_seq,
                "expires_at": request.expires_at.isoformat(),
            },
        )
        lock_id = answer.get("lock_id")
        if not isinstance(lock_id, str) or not lock_id:
            raise self._unreadable("lock", request.hold_id)
        return lock_id

    def release_slot(self, *, hold_id: int, his_lock_id: str, slot_code: str) -> None:
        if not self.has_lock_api:
            return None
        try:
            self._call("release", "POST", wire.LOCK_RELEASE, hold_id=hold_id, payload={"hold_id": hold_id, "lock_id": his_lock_id})
        except HisRefused as exc:
            if exc.reason not in (wire.Code.NOT_FOUND, wire.Code.LOCK_NOT_FOUND):
                raise
            # nothing to release is not an error (the contract answers 200 released=false)
        return None

    def register(self, request: RegisterRequest) -> RegisterResult:
        patient: dict[str, Any] = {
            "name": request.patient_name,
            "id_type": contract_id_type(request.id_type),
            "id_number": request.id_number,
        }
        if request.card_no:
            patient["card_no"] = request.card_no
        answer = self._call(
            "register",
            "POST",
            wire.REGISTRATIONS,
            hold_id=request.hold_id,
            payload={
                "hold_id": request.hold_id,
                "lock_id": request.his_lock_id if self.has_lock_api else "",
                "session_code": request.session_code,
                "slot_code": request.slot_code,
                "slot_seq": request.slot_seq,
                "patient": patient,
                "fee_fen": request.fee_fen,
                "self_pay_fen": request.self_pay_fen,
                "insurance_fen": request.insurance_fen,
                "out_trade_no": request.out_trade_no,
            },
        )
        record = self._record(answer, "register", request.hold_id)
        return RegisterResult(registration_no=record.registration_no)

    def query_registration(self, *, hold_id: int) -> RegistrationRecord | None:
        try:
            answer = self._call("query", "POST", wire.REGISTRATION_QUERY, hold_id=hold_id, payload={"hold_id": hold_id})
        except HisRefused as exc:
            if exc.reason == wire.Code.NOT_FOUND:
                return None
            raise
        return self._record(answer, "query", hold_id)

    def cancel_registration(self, *, hold_id: int, registration_no: str = "") -> None:
        try:
            self._call(
                "cancel",
                "POST",
                wire.REGISTRATION_CANCEL,
                hold_id=hold_id,
                payload={"hold_id": hold_id, "registration_no": registration_no},
            )
        except HisRefused as exc:
            if exc.reason != wire.Code.NOT_FOUND:  # never made: nothing to cancel
                raise
        return None

    def fetch_schedule(self, *, since: str = "", days: int = 14) -> ScheduleBatch:
        query: dict[str, Any] = {"days": days}
        if since:
            query = {"since": since, **query}
        answer = self._call("schedule", "GET", wire.SCHEDULE, query=query)
        try:
            return parse_schedule(answer)
        except (KeyError, TypeError, ValueError) as exc:
            raise self._unreadable("schedule", None) from exc

    def find_or_create_card(self, request: CardRequest) -> str:
        payload = {"name": request.name, "id_type": contract_id_type(request.id_type), "id_number": request.id_number}
        if request.phone:
            payload["phone"] = request.phone
        answer = self._call("card", "POST", wire.PATIENT_CARD, payload=payload)
        card_no = answer.get("card_no")
        if not isinstance(card_no, str) or not card_no:
            raise self._unreadable("card", None)
        return card_no

    def registrations_of_day(self, day: dt.date) -> list[RegistrationRecord]:
        answer = self._call("day", "GET", wire.REGISTRATIONS_OF_DAY, query={"date": day.isoformat()})
        rows = answer.get("registrations")
        if not isinstance(rows, list):
            raise self._unreadable("day", None)
        return [self._record(row, "day", None) for row in rows]

    # --- one signed request ----------------------------------------------------------------------

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        hold_id: int | None = None,
        payload: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        request = self._client.build_request(method, url, content=body)
        # Sign exactly what goes on the wire: the path (with the base URL's own prefix) and query.
        target = request.url.raw_path.decode("ascii")
        request.headers.update(
            wire.signed_request_headers(self._secret, hospital=self.hospital_code, method=method, target=target, body=body)
        )
        started = time.monotonic()
        context = {"his_operation": operation, "hold_id": hold_id, "his_hospital": self.hospital_code}
        try:
            with metrics.outside_call("his") as call:
                response = self._client.send(request)
                if response.status_code >= 500 or response.status_code == 401:
                    call.failed()
        except httpx.TimeoutException as exc:
            log.warning("his call timed out", extra={**context, "elapsed_ms": _ms(started)})
            raise HisTimeout("timeout") from exc
        except httpx.HTTPError as exc:  # refused or dropped connection, protocol error
            log.warning("his call failed without an answer", extra={**context, "error": type(exc).__name__})
            raise HisTimeout("connect_error") from exc
        status, content = response.status_code, response.content
        context |= {"status": status, "elapsed_ms": _ms(started)}
        if status == 401:
            log.error("his refused our signature: check the hospital code and secret", extra=context)
            raise HisRefused(wire.Code.BAD_SIGNATURE)
        verdict = wire.verify_response(self._secret, dict(response.headers), status=status, body=content)
        if not verdict.ok:
            # Unsigned or wrongly signed: not the gateway speaking, so nothing is known.
            log.error("his answer failed its signature check", extra={**context, "reason": verdict.reason})
            raise HisTimeout("bad_answer_signature")
        answer = _json_object(content)
        if 200 <= status < 300:
            if answer is None:
                raise self._unreadable(operation, hold_id)
            log.info("his call", extra=context)
            return answer
        code = answer.get("code") if answer is not None else None
        if 400 <= status < 500 and code in CONTRACT_CODES:
            log.info("his refused", extra={**context, "code": code})
            raise HisRefused(code)
        log.warning("his answered outside the contract", extra=context)
        raise HisTimeout(f"http_{status}")

    def _record(self, answer: Any, operation: str, hold_id: int | None) -> RegistrationRecord:
        try:
            return parse_registration(answer)
        except (KeyError, TypeError, ValueError) as exc:
            raise self._unreadable(operation, hold_id) from exc

    @staticmethod
    def _unreadable(operation: str, hold_id: int | None) -> HisTimeout:
        log.warning("his answer not in the contract's shape", extra={"his_operation": operation, "hold_id": hold_id})
        return HisTimeout("unreadable_answer")


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(content)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- the contract's JSON → the port's dataclasses ---------------------------------------------------


def _text(value: Any, *, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


def _moment(value: Any) -> dt.datetime:
    moment = dt.datetime.fromisoformat(_text(value))
    if moment.tzinfo is None:
        raise ValueError("a time without its offset")
    return moment


REGISTRATION_STATUSES = frozenset({"booked", "checked_in", "visited", "cancelled"})


def parse_registration(row: Any) -> RegistrationRecord:
    if not isinstance(row, dict):
        raise TypeError("not an object")
    number = _text(row["registration_no"])
    status = _text(row.get("status", "booked"))
    if not number or status not in REGISTRATION_STATUSES:
        raise ValueError("registration without a number or with an unknown status")
    hold_id, fee, seq = row.get("hold_id"), row.get("fee_fen"), row.get("visit_seq")
    return RegistrationRecord(
        registration_no=number,
        status=status,
        hold_id=None if hold_id is None else _int(hold_id),
        fee_fen=None if fee is None else _int(fee),
        visit_seq=None if seq is None else _int(seq),
    )


def parse_schedule(answer: dict[str, Any]) -> ScheduleBatch:
    """Raises KeyError, TypeError or ValueError on anything that is not the contract's Schedule."""
    for key in ("departments", "doctors", "sessions"):
        if not isinstance(answer.get(key, []), list):
            raise TypeError(f"{key} is not a list")
    departments = tuple(
        HisDepartment(
            code=_text(d["code"]),
            name=_text(d["name"]),
            parent_code=_text(d.get("parent_code"), optional=True) or None,
            location=_text(d.get("location"), optional=True),
        )
        for d in answer.get("departments", [])
    )
    doctors = tuple(
        HisDoctor(
            code=_text(d["code"]),
            name=_text(d["name"]),
            department_code=_text(d["department_code"]),
            title=_text(d.get("title"), optional=True),
            specialty=_text(d.get("specialty"), optional=True),
        )
        for d in answer.get("doctors", [])
    )
    sessions = tuple(
        HisSession(
            code=_text(s["code"]),
            department_code=_text(s["department_code"]),
            doctor_code=_text(s.get("doctor_code"), optional=True) or None,
            registration_type=_text(s["registration_type"]),
            date=dt.date.fromisoformat(_text(s["date"])),
            period=_text(s["period"]),
            start=_moment(s["start"]),
            end=_moment(s["end"]),
            fee_fen=_int(s["fee_fen"]),
            status=_text(s.get("status", "open")),
            suspend_reason=_text(s.get("suspend_reason"), optional=True),
            location=_text(s.get("location"), optional=True),
            slots=tuple(
                HisSlot(
                    code=_text(slot["code"]),
                    seq=_int(slot["seq"]),
                    start=_moment(slot["start"]),
                    end=_moment(slot["end"]),
                    state=_text(slot.get("state", "free")),
                )
                for slot in s.get("slots", [])
            ),
        )
        for s in answer.get("sessions", [])
    )
    return ScheduleBatch(cursor=_text(answer["cursor"]), departments=departments, doctors=doctors, sessions=sessions)
