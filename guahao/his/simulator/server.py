"""The HTTP side of the simulator: the contract's paths (signed, docs/his-gateway.openapi.yaml) and
the unsigned control endpoint under /_control/ (loopback only). Standard library only, so the
process starts in a fraction of a second and needs no database."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from guahao.his import wire
from guahao.his.simulator.faults import FaultBoard, parse_fault
from guahao.his.simulator.inventory import BREAKS, LOCAL_TZ, Hospital, Refusal
from guahao.simulators import SimulatorHandler

# (method, path) → operation name used by faults and the call log.
ROUTES = {
    ("GET", wire.SCHEDULE): "schedule",
    ("POST", wire.LOCKS): "lock",
    ("POST", wire.LOCK_RELEASE): "release",
    ("POST", wire.REGISTRATIONS): "register",
    ("POST", wire.REGISTRATION_QUERY): "query",
    ("POST", wire.REGISTRATION_CANCEL): "cancel",
    ("GET", wire.REGISTRATIONS_OF_DAY): "day",
    ("POST", wire.PATIENT_CARD): "card",
}
# What "conflict" answers for each operation: its natural refusal (release has none: it says
# there was nothing to release while keeping the lock, as a confused HIS might).
CONFLICTS: dict[str, tuple[int, dict[str, Any]]] = {
    "lock": (409, {"code": wire.Code.SLOT_TAKEN, "message": "the number is taken (injected)"}),
    "release": (200, {"released": False}),
    "register": (409, {"code": wire.Code.LOCK_NOT_FOUND, "message": "no live lock for this hold (injected)"}),
    "query": (404, {"code": wire.Code.NOT_FOUND, "message": "no registration for this hold (injected)"}),
    "cancel": (409, {"code": wire.Code.ALREADY_VISITED, "message": "the patient checked in (injected)"}),
    "schedule": (400, {"code": wire.Code.BAD_REQUEST, "message": "cursor refused (injected)"}),
    "card": (422, {"code": wire.Code.PATIENT_REJECTED, "message": "the HIS will not open a card (injected)"}),
    "day": (400, {"code": wire.Code.BAD_REQUEST, "message": "date refused (injected)"}),
}
NONCE_MEMORY_SECONDS = 600


class Simulator:
    """Everything one simulator process holds: the hospital, its secret, faults, seen nonces, the
    call log and a clock offset the control endpoint can move (to let locks lapse in tests)."""

    def __init__(self, *, hospital: str, secret: str, seed: str = "demo", days: int = 7, breaks: tuple[str, ...] = (), attendance_rate: float = 0.0) -> None:
        self.hospital_code, self.secret, self.seed, self.days = hospital, secret, seed, days
        self.initial_breaks, self.initial_attendance = tuple(breaks), attendance_rate
        self.faults = FaultBoard()
        self.stopping = threading.Event()  # wakes "timeout" faults when the process stops
        self._mutex = threading.Lock()
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self.offset = dt.timedelta(0)
        self.reset()

    def reset(self) -> None:
        with self._mutex:
            self.offset = dt.timedelta(0)
            self.calls: dict[str, int] = {}
            self.hospital = Hospital(code=self.hospital_code, seed=self.seed, days=self.days, now=self.now())
            self.hospital.breaks = set(self.initial_breaks)
            self.hospital.attendance_rate = self.initial_attendance
        self.faults.clear()

    def now(self) -> dt.datetime:
        return dt.datetime.now(LOCAL_TZ) + self.offset

    def count(self, name: str) -> None:
        with self._mutex:
            self.calls[name] = self.calls.get(name, 0) + 1

    def fresh_nonce(self, nonce: str) -> bool:
        """True the first time a nonce is seen within NONCE_MEMORY_SECONDS."""
        moment = time.monotonic()
        with self._mutex:
            while self._nonces and next(iter(self._nonces.values())) < moment - NONCE_MEMORY_SECONDS:
                self._nonces.popitem(last=False)
            if nonce in self._nonces:
                return False
            self._nonces[nonce] = moment
            return True


class _Dropped(Exception):
    """Close the connection without an answer."""


class Handler(SimulatorHandler):
    server: SimulatorServer

    # --- plumbing --------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self._body = body
        path, _, query = self.path.partition("?")
        try:
            if path.startswith("/_control/"):
                self._control(method, path, body)
            else:
                self._contract(method, path, query, body)
        except _Dropped:
            self._drop()

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _answer(self, status: int, document: dict[str, Any], *, signed: bool) -> None:
        payload = json.dumps(document, ensure_ascii=False).encode()
        sim = self.server.sim
        if signed and "unsigned" not in sim.hospital.breaks:
            headers = wire.signed_response_headers(sim.secret, status=status, body=payload)
        else:
            headers = {"Content-Type": "application/json; charset=utf-8"}
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, body: bytes) -> dict[str, Any]:
        try:
            document = json.loads(body or b"{}")
        except ValueError:
            raise Refusal(400, wire.Code.BAD_REQUEST, "the body is not JSON") from None
        if not isinstance(document, dict):
            raise Refusal(400, wire.Code.BAD_REQUEST, "the body is not a JSON object")
        return document

    # --- the contract ------------------------------------------------------------------------------

    def _contract(self, method: str, path: str, query: str, body: bytes) -> None:
        sim = self.server.sim
        operation = ROUTES.get((method, path))
        if operation is None:
            self._answer(404, {"code": wire.Code.BAD_REQUEST, "message": f"no {method} {path} in the contract"}, signed=True)
            return
        sim.count(operation)
        fault = sim.faults.take(operation)
        if fault is not None and fault.fault == "down":
            raise _Dropped
        refused = self._refuse_signature()
        if refused:
            sim.count("bad_signature")
            self._answer(401, {"code": wire.Code.BAD_SIGNATURE, "message": refused}, signed=True)
            return
        if fault is not None:
            if fault.fault == "latency":
                time.sleep(fault.delay_seconds())
            elif fault.fault == "timeout":
                sim.stopping.wait(fault.delay_seconds())
                raise _Dropped
            elif fault.fault == "error":
                self._answer(500, {"code": "INTERNAL_ERROR", "message": "HIS internal error (injected)"}, signed=True)
                return
            elif fault.fault == "conflict":
                status, document = CONFLICTS[operation]
                self._answer(status, document, signed=True)
                return
        try:
            status, document = 200, self._perform(operation, query, body)
        except Refusal as refusal:
            status, document = refusal.status, refusal.body()
        if fault is not None and fault.fault == "lost_reply":
            raise _Dropped
        self._answer(status, document, signed=True)

    def _refuse_signature(self) -> str:
        """Why the request's signature is refused, or "" when it checks."""
        sim = self.server.sim
        if "signature" in sim.hospital.breaks:
            return ""
        if self.headers.get(wire.HOSPITAL_HEADER, "") != sim.hospital_code:
            return "unknown hospital"
        verdict = wire.verify_request(sim.secret, dict(self.headers.items()), method=self.command, target=self.path, body=self._body)
        if not verdict.ok:
            return verdict.reason
        if not sim.fresh_nonce(self.headers.get(wire.NONCE_HEADER, "")):
            return "nonce already used"
        return ""

    def _perform(self, operation: str, query: str, body: bytes) -> dict[str, Any]:
        sim = self.server.sim
        hospital, now = sim.hospital, sim.now()
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        if operation == "schedule":
            try:
                days = int(params.get("days", "14"))
            except ValueError:
                raise Refusal(400, wire.Code.BAD_REQUEST, "days is an integer") from None
            if not 1 <= days <= 31:
                raise Refusal(400, wire.Code.BAD_REQUEST, "days is between 1 and 31")
            return hospital.schedule(since=params.get("since", ""), days=days, now=now)
        if operation == "day":
            try:
                day = dt.date.fromisoformat(params.get("date", ""))
            except ValueError:
                raise Refusal(400, wire.Code.BAD_REQUEST, "date is YYYY-MM-DD") from None
            return hospital.registrations_of_day(day=day, now=now)
        actions: dict[str, Callable[..., dict[str, Any]]] = {
            "lock": hospital.lock, "release": hospital.release, "register": hospital.register,
            "query": hospital.query, "cancel": hospital.cancel, "card": hospital.card,
        }
        return actions[operation](self._json(body), now=now)

    # --- the control endpoint (unsigned; loopback only) ----------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> None:
        sim = self.server.sim
        try:
            document = self._json(body) if method == "POST" else {}
            answer = self._control_action(sim, method, path.removeprefix("/_control"), document)
        except Refusal as refusal:
            self._answer(refusal.status, refusal.body(), signed=False)
        except (ValueError, KeyError, TypeError) as error:
            self._answer(400, {"code": wire.Code.BAD_REQUEST, "message": str(error)}, signed=False)
        else:
            self._answer(200, answer, signed=False)

    def _control_action(self, sim: Simulator, method: str, path: str, document: dict[str, Any]) -> dict[str, Any]:
        hospital, now = sim.hospital, sim.now()
        if (method, path) == ("GET", "/state"):
            with sim._mutex:
                calls = dict(sim.calls)
            return {**hospital.state(now=now), "calls": calls, "faults": sim.faults.listing()}
        if (method, path) == ("POST", "/faults"):
            sim.faults.add(parse_fault(document))
            return {"faults": sim.faults.listing()}
        if (method, path) == ("DELETE", "/faults"):
            sim.faults.clear()
            return {"faults": []}
        if (method, path) == ("POST", "/reset"):
            sim.reset()
            return {"reset": True}
        if (method, path) == ("POST", "/suspend"):
            return hospital.suspend(session_code=document["session_code"], reason=document.get("reason", "医生临时有事"), now=now)
        if (method, path) == ("POST", "/attendance"):
            if "auto_rate" in document:
                rate = float(document["auto_rate"])
                if not 0 <= rate <= 1:
                    raise ValueError("auto_rate is between 0 and 1")
                hospital.attendance_rate = rate
                return {"attendance_rate": rate}
            return hospital.attend(document, now=now)
        if (method, path) == ("POST", "/sessions"):
            return hospital.add_session(document, now=now)
        if (method, path) == ("POST", "/capacity"):
            return hospital.change_capacity(session_code=document["session_code"], add=int(document["add"]), now=now)
        if (method, path) == ("POST", "/clock"):
            sim.offset += dt.timedelta(seconds=float(document["advance_seconds"]))
            return {"now": sim.now().isoformat(timespec="seconds")}
        if (method, path) == ("POST", "/break"):
            mode = document.get("mode")
            if mode not in BREAKS:
                raise ValueError(f"mode is one of {', '.join(BREAKS)}")
            hospital.breaks.add(mode)
            return {"breaks": sorted(hospital.breaks)}
        if (method, path) == ("DELETE", "/break"):
            hospital.breaks.clear()
            return {"breaks": []}
        raise Refusal(404, wire.Code.NOT_FOUND, f"no {method} /_control{path}")


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True  # a connection held by a "timeout" fault never keeps the process alive
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: Simulator, *, verbose: bool = False) -> None:
        self.sim, self.verbose = sim, verbose
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, Handler)


def parse_bind(bind: str) -> tuple[str, int]:
    """"127.0.0.1:9100" → ("127.0.0.1", 9100); loopback only, since the control endpoint is unsigned."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"--bind must be a loopback address (127.0.0.1 or ::1), not {host!r}: the control endpoint is unsigned")
    return host, int(port)
