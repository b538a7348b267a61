"""A sandbox 实名核验 service that answers like a real one, deterministically, for development and
tests. Any well-formed identity passes, except:

- a name containing "测试不符" is rejected: 姓名与证件号码不一致;
- an ID number in ON_FILE checked with any other name is rejected the same way;
- an ID number in NOT_ON_FILE is rejected: 证件号码不存在或已注销;
- a name containing "测试超时", or any call inside `outage()`, raises RealnameUnavailable.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from guahao.patients.idcard import check_character
from guahao.patients.realname.base import RealnameRejected, RealnameUnavailable

MISMATCH_MARK = "测试不符"
OUTAGE_MARK = "测试超时"


def _id(first17: str) -> str:
    return first17 + check_character(first17)


# Test identities as the service has them on file (ID number → registered name).
ON_FILE: dict[str, str] = {
    _id("44030519700101001"): "李四",
    _id("31010419850615002"): "王五",
    _id("81000019920202003"): "陈大文",
}
NOT_ON_FILE: frozenset[str] = frozenset({_id("44030519700101009"), _id("31010419850615008")})

_outages = 0
_lock = threading.Lock()


@contextlib.contextmanager
def outage() -> Iterator[None]:
    """Every verification inside the block fails as if the service were down."""
    global _outages
    with _lock:
        _outages += 1
    try:
        yield
    finally:
        with _lock:
            _outages -= 1


class SandboxRealnameVerifier:
    def verify(self, *, name: str, id_type: str, id_number: str) -> None:  # noqa: ARG002
        if _outages or OUTAGE_MARK in name:
            raise RealnameUnavailable("sandbox: simulated outage")
        if MISMATCH_MARK in name:
            raise RealnameRejected("姓名与证件号码不一致")
        if id_number in NOT_ON_FILE:
            raise RealnameRejected("证件号码不存在或已注销")
        on_file = ON_FILE.get(id_number)
        if on_file is not None and on_file != name:
            raise RealnameRejected("姓名与证件号码不一致")
