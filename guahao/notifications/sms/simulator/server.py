"""The simulator's HTTP side: the RPC endpoint "/" (POST form or GET query, as Aliyun takes both)
and the unsigned control endpoint under /_control/ (loopback only)."""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any
from urllib.parse import parse_qsl

from guahao.notifications.sms.simulator.provider import Hang, SmsProvider
from guahao.simulators import SimulatorHandler, loopback
from guahao.simulators import SimulatorServer as BaseSimulatorServer

__all__ = ["Handler", "SimulatorServer", "loopback"]

MAX_BODY = 1 << 16


class Handler(SimulatorHandler):
    server: SimulatorServer

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(413, {"Code": "RequestTooLarge", "Message": "request body too large"})
            return
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        if path.startswith("/_control/"):
            self._control(method, path.removeprefix("/_control"), query, body)
        elif path == "/" and method in ("GET", "POST"):
            self._rpc(method, query, body)
        else:
            self._answer(404, {"Code": "InvalidApi.NotFound", "Message": "Specified api is not found, please check your url and method."})

    def _rpc(self, method: str, query: str, body: bytes) -> None:
        params = dict(parse_qsl(query, keep_blank_values=True))
        if method == "POST":
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            status, document = self.server.provider.send(method, params)
        except Hang as hang:
            self.server.stopping.wait(hang.seconds)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._answer(status, document)

    def _answer(self, status: int, document: Any) -> None:
        payload = json.dumps(document, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _control(self, method: str, path: str, query: str, body: bytes) -> None:
        provider = self.server.provider
        try:
            document = json.loads(body or b"{}") if method == "POST" else {}
            if not isinstance(document, dict):
                raise ValueError("the body is a JSON object")
            if (method, path) == ("GET", "/state"):
                answer: Any = provider.state()
            elif (method, path) == ("GET", "/messages"):
                phone = dict(parse_qsl(query)).get("phone", "")
                answer = {"messages": [m for m in provider.state()["sent"] if not phone or m["phone"] == phone[-11:]]}
            elif (method, path) == ("POST", "/faults"):
                provider.add_fault(document)
                answer = {"faults": provider.state()["faults"]}
            elif (method, path) == ("DELETE", "/faults"):
                provider.clear_faults()
                answer = {"faults": []}
            elif (method, path) == ("POST", "/templates"):
                provider.add_template(str(document.get("code", "")), str(document.get("content", "")))
                answer = {"templates": provider.state()["templates"]}
            elif (method, path) == ("POST", "/signs"):
                provider.add_sign(str(document.get("name", "")))
                answer = {"signs": provider.state()["signs"]}
            elif (method, path) == ("POST", "/clock"):
                answer = {"offset_seconds": provider.advance(float(document["advance_seconds"]))}
            elif (method, path) == ("POST", "/reset"):
                provider.reset()
                answer = {"reset": True}
            else:
                self._answer(404, {"message": f"no {method} /_control{path}"})
                return
        except (ValueError, KeyError, TypeError) as error:
            self._answer(400, {"message": str(error)})
            return
        self._answer(200, answer)


class SimulatorServer(BaseSimulatorServer):
    def __init__(self, address: tuple[str, int], provider: SmsProvider, *, verbose: bool = False) -> None:
        self.provider = provider
        super().__init__(address, Handler, verbose=verbose)
