"""The sandbox providers' books: trades, refunds and queued notifications of both providers, in
memory behind one lock. The protocol modules (wechat, alipay) translate HTTP to the operations
here and back; tests and operators reach the same state through `SandboxGateway`.

Business times (trade and refund times, expiry, notification times, the retry schedule, bills)
come from the `now` callable, so a test that moves its clock moves the sandbox providers too."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import pathlib
import random
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from guahao.payments.reconciliation.bills import (
    SUCCESS,
    BillRow,
    write_alipay_bill,
    write_wechat_bill,
)
from guahao.payments.sandbox import alipay as alipay_wire
from guahao.payments.sandbox import wechat as wechat_wire
from guahao.payments.sandbox.keys import SandboxKeys
from guahao.payments.sandbox.records import (
    ALIPAY,
    CLOSED,
    NOTPAY,
    PAID,
    PROCESSING,
    REFUND,
    REFUND_SUCCESS,
    WECHAT,
    Delivery,
    DuplicateTrade,
    Probe,
    RefundRefused,
    SandboxRefund,
    Trade,
    TradeClosed,
    TradeNotFound,
    TradePaid,
)
from guahao.payments.sandbox.wire import LOCAL_TZ, wrong_signature

__all__ = ["ALIPAY_RETRY", "OPERATIONS", "WECHAT_RETRY", "SandboxGateway"]

log = logging.getLogger("guahao.payments.sandbox")

_m = dt.timedelta(minutes=1)
_h = dt.timedelta(hours=1)
# Re-sends after a failed notification, as each provider documents them; then it gives up.
WECHAT_RETRY = tuple(
    dt.timedelta(seconds=s)
    for s in (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600)
)
ALIPAY_RETRY = (4 * _m, 10 * _m, 10 * _m, _h, 2 * _h, 6 * _h, 15 * _h)

OPERATIONS = frozenset(
    {
        "wechat.create",
        "wechat.query",
        "wechat.close",
        "wechat.refund",
        "wechat.refund_query",
        "wechat.bill",
        "alipay.trade.query",
        "alipay.trade.close",
        "alipay.trade.refund",
        "alipay.trade.fastpay.refund.query",
        "alipay.bill",
    }
)
FAULT_KINDS = frozenset({"lost_reply", "drop", "error"})


@dataclass
class _Fault:
    kind: str
    remaining: int
    code: str


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _copy(obj: Any) -> Any:
    return dataclasses.replace(obj)


class SandboxGateway:
    """Both sandbox providers' state. Thread-safe: every operation runs under one lock, and no
    lock is held while a notification is on its way (the merchant may call back meanwhile)."""

    def __init__(
        self,
        keys: SandboxKeys,
        *,
        now: Callable[[], dt.datetime] | None = None,
        probe_rate: float = 0.0,
        refund_delay: dt.timedelta = dt.timedelta(0),
        seed: int | None = None,
    ) -> None:
        self.keys = keys
        self.url = ""
        self.probe_rate = probe_rate
        self.refund_delay = refund_delay
        self.probes: list[Probe] = []
        self.state_path: pathlib.Path | None = None
        self._clock = now or _utc_now
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._dirty = False
        self._trades: dict[str, Trade] = {}
        self._by_transaction: dict[str, str] = {}
        self._by_prepay: dict[str, str] = {}
        self._closed_numbers: set[str] = set()  # Alipay numbers closed before any trade existed
        self._refunds: list[SandboxRefund] = []
        self._wechat_refunds: dict[str, SandboxRefund] = {}
        self._alipay_refunds: dict[tuple[str, str], SandboxRefund] = {}
        self._pending: list[SandboxRefund] = []
        self._deliveries: list[Delivery] = []
        self._faults: dict[str, list[_Fault]] = {}
        self._bill_files: dict[str, tuple[str, bytes]] = {}

    # --- addresses -----------------------------------------------------------------------------

    @property
    def wechat_base(self) -> str:
        """What wechatpayv3's `_core._gate_way` is set to."""
        return self.url

    @property
    def alipay_gateway(self) -> str:
        """What python-alipay-sdk's `_gateway` is set to."""
        return self.url + "/gateway.do"

    # --- time and ids --------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        moment = self._clock()
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)

    def _random_digits(self, count: int) -> str:
        with self._lock:
            return "".join(self._rng.choice("0123456789") for _ in range(count))

    def _random_hex(self, count: int) -> str:
        with self._lock:
            return "".join(self._rng.choice("0123456789abcdef") for _ in range(count))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            try:
                self._settle()
                yield
            finally:  # a refusal may follow a change (an Alipay number remembered as closed)
                if self._dirty and self.state_path is not None:
                    self._save()
                self._dirty = False

    # --- what tests and operators read ---------------------------------------------------------

    def trade(self, out_trade_no: str) -> Trade | None:
        with self._locked():
            trade = self._trades.get(out_trade_no)
            if trade is None:
                return None
            self._refresh(trade)
            return _copy(trade)

    def trade_by_transaction(self, transaction_id: str) -> Trade | None:
        with self._locked():
            number = self._by_transaction.get(transaction_id)
        return self.trade(number) if number else None

    def trade_by_prepay(self, prepay_id: str) -> Trade | None:
        with self._locked():
            number = self._by_prepay.get(prepay_id)
        return self.trade(number) if number else None

    def refunds(self, out_trade_no: str) -> list[SandboxRefund]:
        with self._locked():
            return [_copy(r) for r in self._refunds if r.out_trade_no == out_trade_no]

    def find_refund(
        self, provider: str, out_refund_no: str, out_trade_no: str = ""
    ) -> SandboxRefund | None:
        with self._locked():
            if provider == WECHAT:
                refund = self._wechat_refunds.get(out_refund_no)
            else:
                refund = self._alipay_refunds.get((out_trade_no, out_refund_no))
            return _copy(refund) if refund else None

    def notifications(self, out_trade_no: str | None = None) -> list[Delivery]:
        """Every queued notification, delivered or not, oldest first."""
        with self._locked():
            return [
                _copy(d)
                for d in self._deliveries
                if out_trade_no is None or d.out_trade_no == out_trade_no
            ]

    # --- trades --------------------------------------------------------------------------------

    def open_trade(
        self,
        provider: str,
        out_trade_no: str,
        *,
        amount_fen: int,
        description: str,
        notify_url: str,
        trade_type: str,
        fingerprint: str,
        expires_at: dt.datetime | None = None,
        return_url: str = "",
        payer_id: str = "",
        quit_url: str = "",
    ) -> Trade:
        """The trade of that number: created, or the existing one when its content is the same
        (whatever its state). DuplicateTrade when the number is taken by other content."""
        with self._locked():
            existing = self._trades.get(out_trade_no)
            if existing is not None:
                self._refresh(existing)
                if existing.provider != provider or existing.fingerprint != fingerprint:
                    raise DuplicateTrade(_copy(existing))
                return _copy(existing)
            now = self.now()
            trade = Trade(
                provider=provider,
                out_trade_no=out_trade_no,
                amount_fen=amount_fen,
                description=description,
                state=NOTPAY,
                transaction_id="",
                created_at=now,
                expires_at=expires_at,
                notify_url=notify_url,
                return_url=return_url,
                trade_type=trade_type,
                payer_id=payer_id,
                quit_url=quit_url,
                fingerprint=fingerprint,
            )
            if provider == WECHAT:
                trade.prepay_id = (
                    "wx" + now.astimezone(LOCAL_TZ).strftime("%d%H%M%S") + self._random_hex(26)
                )
                self._by_prepay[trade.prepay_id] = out_trade_no
            else:
                trade.transaction_id = (
                    now.astimezone(LOCAL_TZ).strftime("%Y%m%d") + "2200" + self._random_digits(16)
                )
                self._by_transaction[trade.transaction_id] = out_trade_no
                if out_trade_no in self._closed_numbers:  # closed before the page was ever opened
                    trade.state, trade.closed_at = CLOSED, now
            self._trades[out_trade_no] = trade
            self._dirty = True
            self._refresh(trade)
            return _copy(trade)

    def pay(self, out_trade_no: str, *, succeed: bool = True) -> Trade:
        """The patient confirms on the cashier (or, with succeed=False, cancels: the trade stays
        NOTPAY). Paying an already paid trade changes nothing. TradeNotFound, TradeClosed."""
        with self._locked():
            trade = self._trades.get(out_trade_no)
            if trade is None:
                raise TradeNotFound(out_trade_no)
            self._refresh(trade)
            if trade.state == CLOSED:
                raise TradeClosed(out_trade_no)
            if trade.state != NOTPAY or not succeed:
                return _copy(trade)
            now = self.now()
            trade.state, trade.paid_at = PAID, now
            if trade.provider == WECHAT:
                trade.transaction_id = (
                    "4200"
                    + self._random_digits(6)
                    + now.astimezone(LOCAL_TZ).strftime("%Y%m%d")
                    + self._random_digits(10)
                )
                self._by_transaction[trade.transaction_id] = out_trade_no
                trade.payer_id = trade.payer_id or "o" + self._random_hex(27)
            else:
                trade.payer_id = "2088" + self._random_digits(12)
            self._dirty = True
            self._queue_trade_notification(trade)
            return _copy(trade)

    def close_trade(self, provider: str, out_trade_no: str) -> tuple[Trade, bool]:
        """(the trade, whether this call closed it). TradePaid for a paid or refunded trade;
        TradeNotFound, and an unknown Alipay number is remembered: a trade opened later under it
        is born closed, as Alipay never lets a closed number be paid."""
        with self._locked():
            trade = self._trades.get(out_trade_no)
            if trade is None or trade.provider != provider:
                if provider == ALIPAY and trade is None:
                    self._closed_numbers.add(out_trade_no)
                    self._dirty = True
                raise TradeNotFound(out_trade_no)
            self._refresh(trade)
            if trade.state in (PAID, REFUND):
                raise TradePaid(out_trade_no)
            if trade.state == CLOSED:
                return _copy(trade), False
            trade.state, trade.closed_at = CLOSED, self.now()
            self._dirty = True
            return _copy(trade), True

    def _refresh(self, trade: Trade) -> None:
        """Lazy expiry: an unpaid trade past its expiry is closed as of that moment."""
        if (
            trade.state == NOTPAY
            and trade.expires_at is not None
            and self.now() >= trade.expires_at
        ):
            trade.state, trade.closed_at = CLOSED, trade.expires_at
            self._dirty = True

    # --- refunds -------------------------------------------------------------------------------

    def refund(
        self,
        provider: str,
        *,
        out_refund_no: str,
        amount_fen: int,
        out_trade_no: str = "",
        transaction_id: str = "",
        total_fen: int | None = None,
        reason: str = "",
        notify_url: str = "",
    ) -> tuple[SandboxRefund, Trade, bool]:
        """(refund, trade, created). The same number again gives the same refund, never a second
        one. WeChat refunds succeed `refund_delay` later; Alipay's at once. TradeNotFound,
        RefundRefused."""
        with self._locked():
            number = out_trade_no or self._by_transaction.get(transaction_id, "")
            trade = self._trades.get(number)
            if trade is None or trade.provider != provider:
                raise TradeNotFound(number or transaction_id)
            self._refresh(trade)
            if provider == WECHAT:
                existing = self._wechat_refunds.get(out_refund_no)
            else:
                existing = self._alipay_refunds.get((trade.out_trade_no, out_refund_no))
            if existing is not None:
                if existing.out_trade_no != trade.out_trade_no:
                    raise RefundRefused("number_taken")
                return _copy(existing), _copy(trade), False
            if trade.state not in (PAID, REFUND):
                raise RefundRefused("not_paid")
            if total_fen is not None and total_fen != trade.amount_fen:
                raise RefundRefused("total_mismatch")
            if trade.refunded_fen + amount_fen > trade.amount_fen:
                raise RefundRefused("exceeds")
            now = self.now()
            refund = SandboxRefund(
                provider=provider,
                out_refund_no=out_refund_no,
                out_trade_no=trade.out_trade_no,
                amount_fen=amount_fen,
                state=PROCESSING,
                requested_at=now,
                refund_id="50" + self._random_digits(27) if provider == WECHAT else "",
                reason=reason,
                notify_url=notify_url,
            )
            trade.refunded_fen += amount_fen
            trade.state = REFUND
            self._refunds.append(refund)
            self._dirty = True
            if provider == WECHAT:
                self._wechat_refunds[out_refund_no] = refund
                self._pending.append(refund)
            else:
                self._alipay_refunds[(trade.out_trade_no, out_refund_no)] = refund
                refund.state, refund.succeeded_at = REFUND_SUCCESS, now
                self._queue_refund_notification(trade, refund)
            return _copy(refund), _copy(trade), True

    def _settle(self) -> None:
        """WeChat refunds whose delay has passed succeed, as of that moment, and notify."""
        if not self._pending:
            return
        now = self.now()
        for refund in list(self._pending):
            done_at = refund.requested_at + self.refund_delay
            if now >= done_at:
                refund.state, refund.succeeded_at = REFUND_SUCCESS, done_at
                self._pending.remove(refund)
                self._dirty = True
                self._queue_refund_notification(self._trades[refund.out_trade_no], refund)

    # --- notifications -------------------------------------------------------------------------

    def _queue_trade_notification(self, trade: Trade) -> None:
        if not trade.notify_url:
            return
        now = self.now()
        delivery = Delivery(
            provider=trade.provider,
            event="TRANSACTION.SUCCESS" if trade.provider == WECHAT else "trade_status_sync",
            kind="trade",
            out_trade_no=trade.out_trade_no,
            out_refund_no="",
            url=trade.notify_url,
            id="",
            created_at=now,
            next_at=now,
            gateway=self,
        )
        if trade.provider == WECHAT:
            delivery.id, delivery.body = wechat_wire.transaction_notification(self, trade, now)
        else:
            delivery.id = self._random_hex(34)
            delivery.trade_status = trade.alipay_status
            delivery.params = alipay_wire.notification_params(self, trade, None, delivery.id)
        self._deliveries.append(delivery)
        self._dirty = True

    def _queue_refund_notification(self, trade: Trade, refund: SandboxRefund) -> None:
        url = (
            (refund.notify_url or trade.notify_url)
            if trade.provider == WECHAT
            else trade.notify_url
        )
        if not url:
            return
        at = refund.succeeded_at or self.now()
        delivery = Delivery(
            provider=trade.provider,
            event="REFUND.SUCCESS" if trade.provider == WECHAT else "trade_status_sync",
            kind="refund",
            out_trade_no=trade.out_trade_no,
            out_refund_no=refund.out_refund_no,
            url=url,
            id="",
            created_at=at,
            next_at=at,
            gateway=self,
        )
        if trade.provider == WECHAT:
            delivery.id, delivery.body = wechat_wire.refund_notification(self, trade, refund, at)
        else:
            delivery.id = self._random_hex(34)
            delivery.trade_status = trade.alipay_status
            delivery.params = alipay_wire.notification_params(self, trade, refund, delivery.id)
        self._deliveries.append(delivery)
        self._dirty = True

    def deliver_due(
        self, *, send: Callable[[str, dict[str, str], bytes], tuple[int, bytes]], limit: int = 100
    ) -> int:
        """Send every notification due now (at most `limit`); how many were sent, probes aside.
        A failed one (WeChat: not 2xx; Alipay: not 200 'success'; or `send` raised) is re-sent on
        the provider's schedule, each time signed afresh, until it gives up."""
        with self._locked():
            now = self.now()
            due = [
                d
                for d in self._deliveries
                if d.delivered_at is None
                and d.next_at is not None
                and d.next_at <= now
                and not d.in_flight
            ][:limit]
            plan = []
            for delivery in due:
                delivery.in_flight = True
                plan.append(
                    (delivery, self.probe_rate > 0 and self._rng.random() < self.probe_rate)
                )
        for delivery, probe in plan:
            status, answer = 0, b""
            try:
                if probe:
                    self._probe(delivery, send)
                url, headers, body = delivery.signed()
                try:
                    status, answer = send(url, headers, body)
                except Exception as exc:  # noqa: BLE001 — any failure to send is a failed attempt
                    log.info(
                        "payment sandbox: notification to %s failed: %s", url, type(exc).__name__
                    )
            finally:
                with self._locked():
                    delivery.in_flight = False
                    self._record_attempt(delivery, status, answer)
        return len(plan)

    def _record_attempt(self, delivery: Delivery, status: int, answer: bytes) -> None:
        now = self.now()
        delivery.attempts += 1
        delivery.last_status = status
        self._dirty = True
        if _accepted(delivery.provider, status, answer):
            delivery.delivered_at, delivery.next_at = now, None
            return
        schedule = WECHAT_RETRY if delivery.provider == WECHAT else ALIPAY_RETRY
        retry = delivery.attempts - 1
        delivery.next_at = now + schedule[retry] if retry < len(schedule) else None

    def _probe(
        self, delivery: Delivery, send: Callable[[str, dict[str, str], bytes], tuple[int, bytes]]
    ) -> None:
        """Send a copy with a wrong signature first; a merchant that takes it is logged."""
        if delivery.provider == WECHAT:
            url, headers, body = delivery.signed()
            headers = dict(headers)
            headers["Wechatpay-Signature"] = wrong_signature(
                self.keys.wechat.platform_private_key, body.decode("utf-8")
            )
        else:
            url, headers, body = alipay_wire.signed_notification(self, delivery, forged=True)
        try:
            status, answer = send(url, headers, body)
        except Exception:  # noqa: BLE001 — no answer: refused as far as the probe goes
            status, answer = 0, b""
        accepted = _accepted(delivery.provider, status, answer)
        if accepted:
            log.error(
                "payment sandbox: %s accepted a %s notification with a wrong signature",
                url,
                delivery.provider,
            )
        with self._lock:
            self.probes.append(
                Probe(delivery.provider, url, status, accepted, self.now(), delivery.out_trade_no)
            )

    def sign_delivery(self, delivery: Delivery) -> tuple[str, dict[str, str], bytes]:
        if delivery.provider == WECHAT:
            return wechat_wire.signed_notification(self, delivery)
        return alipay_wire.signed_notification(self, delivery)

    # --- faults --------------------------------------------------------------------------------

    def fault(
        self, operation: str, kind: str, *, times: int = 1, code: str = "SYSTEM_ERROR"
    ) -> None:
        """The next `times` calls of `operation` fail: lost_reply (takes effect, no answer), drop
        (no effect, no answer) or error (the provider's system-error answer)."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {sorted(OPERATIONS)}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.setdefault(operation, []).append(_Fault(kind, times, code))

    def take_fault(self, operation: str) -> tuple[str, str] | None:
        """(kind, code) of the fault this call of `operation` suffers, if any."""
        with self._lock:
            queue = self._faults.get(operation)
            if not queue:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.pop(0)
            return fault.kind, fault.code

    # --- bills ---------------------------------------------------------------------------------

    def bill_rows(
        self, provider: str, day: dt.date, *, payments: bool = True, refunds: bool = True
    ) -> list[BillRow]:
        """Payments paid and refunds succeeded on `day` (Beijing time), oldest first."""
        with self._locked():
            rows: list[BillRow] = []
            trades = [t for t in self._trades.values() if t.provider == provider]
            if payments:
                rows += [
                    BillRow(
                        "payment",
                        t.out_trade_no,
                        "",
                        t.transaction_id,
                        t.amount_fen,
                        SUCCESS,
                        t.paid_at,
                    )
                    for t in trades
                    if t.paid_at is not None and t.paid_at.astimezone(LOCAL_TZ).date() == day
                ]
            if refunds:
                rows += [
                    BillRow(
                        "refund",
                        r.out_trade_no,
                        r.out_refund_no,
                        self._trades[r.out_trade_no].transaction_id,
                        r.amount_fen,
                        SUCCESS,
                        r.succeeded_at,
                    )
                    for r in self._refunds
                    if r.provider == provider
                    and r.succeeded_at is not None
                    and r.succeeded_at.astimezone(LOCAL_TZ).date() == day
                ]
            return sorted(rows, key=lambda row: row.at)

    def bill(self, provider: str, day: dt.date) -> bytes:
        """The day's bill as the provider's download serves it: WeChat's gzip trade bill, Alipay's
        zip of the 业务明细 CSV."""
        rows = self.bill_rows(provider, day)
        if provider == WECHAT:
            return write_wechat_bill(
                rows, appid=self.keys.wechat.appid, mchid=self.keys.wechat.mchid
            )
        if provider == ALIPAY:
            return write_alipay_bill(rows, day=day, account=self.keys.alipay.seller_id)
        raise ValueError(f"unknown provider {provider!r}")

    def issue_bill_file(self, provider: str, data: bytes) -> str:
        """A download token for `data` (what a bill application hands out)."""
        with self._lock:
            token = self._random_hex(32)
            self._bill_files[token] = (provider, data)
            return token

    def bill_file(self, provider: str, token: str) -> bytes | None:
        with self._lock:
            found = self._bill_files.get(token)
        return found[1] if found and found[0] == provider else None

    # --- persistence ---------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "trades": [_encode(t) for t in self._trades.values()],
                "refunds": [_encode(r) for r in self._refunds],
                "deliveries": [_encode(d) for d in self._deliveries],
                "closed_numbers": sorted(self._closed_numbers),
            }

    def restore(self, state: dict[str, Any]) -> None:
        """Load what `to_state` wrote (at start, before serving)."""
        with self._lock:
            for data in state.get("trades", []):
                trade = _decode(Trade, data)
                self._trades[trade.out_trade_no] = trade
                if trade.transaction_id:
                    self._by_transaction[trade.transaction_id] = trade.out_trade_no
                if trade.prepay_id:
                    self._by_prepay[trade.prepay_id] = trade.out_trade_no
            for data in state.get("refunds", []):
                refund = _decode(SandboxRefund, data)
                self._refunds.append(refund)
                if refund.provider == WECHAT:
                    self._wechat_refunds[refund.out_refund_no] = refund
                else:
                    self._alipay_refunds[(refund.out_trade_no, refund.out_refund_no)] = refund
                if refund.state == PROCESSING:
                    self._pending.append(refund)
            for data in state.get("deliveries", []):
                delivery = _decode(Delivery, data)
                delivery.gateway = self
                self._deliveries.append(delivery)
            self._closed_numbers.update(state.get("closed_numbers", []))

    def _save(self) -> None:
        """Write the state aside, then rename it into place: a crash leaves the old file whole."""
        assert self.state_path is not None
        path = self.state_path
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.to_state(), handle, ensure_ascii=False)
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise


def _accepted(provider: str, status: int, answer: bytes) -> bool:
    if provider == WECHAT:
        return 200 <= status < 300
    return status == 200 and answer.strip() == b"success"


_TRANSIENT = {"gateway", "in_flight"}


def _encode(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name in _TRANSIENT:
            continue
        value = getattr(obj, f.name)
        out[f.name] = value.isoformat() if isinstance(value, dt.datetime) else value
    return out


def _decode(cls: type, data: dict[str, Any]) -> Any:
    """Datetimes are the fields named *_at."""
    values = {
        k: dt.datetime.fromisoformat(v) if k.endswith("_at") and isinstance(v, str) else v
        for k, v in data.items()
        if k not in _TRANSIENT
    }
    return cls(**values)
