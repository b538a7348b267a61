"""A check the whole test suite runs under (guahao/conftest.py): every UPDATE on a table whose rows
carry money or slot state must be a compare-and-set on the row itself. Django turns a filter across
a relation into `UPDATE … WHERE id IN (SELECT … JOIN …)`, and PostgreSQL does not re-check the
subquery's conditions against a row changed by a concurrent transaction (see docs/operations.md)."""

from __future__ import annotations

GUARDED_TABLES = ("booking_hold", "scheduling_slot", "booking_registration", "payments_payment", "payments_refund")
_HEADS = tuple(f'UPDATE "{t.upper()}"' for t in GUARDED_TABLES) + tuple(f"UPDATE {t.upper()} " for t in GUARDED_TABLES)


class JoinedStateUpdate(AssertionError):
    pass


def is_joined_state_update(sql: str) -> bool:
    text = sql.lstrip().upper()
    return text.startswith(_HEADS) and " IN (SELECT" in text


def refuse_joined_state_updates(execute, sql, params, many, context):
    """A database execute wrapper that fails such an UPDATE before it runs."""
    if is_joined_state_update(sql):
        raise JoinedStateUpdate(f"UPDATE with a subquery in its WHERE is not a compare-and-set: {sql[:200]}")
    return execute(sql, params, many, context)
