"""Moving personal data onto the current keys while the service runs (`guahao rotate-keys`).

Every column of an `EncryptedTextField` (any app) is re-encrypted with the current data key, and the
blind indexes of accounts and patients are recomputed with the current index key from the clear
values. Digests kept without their clear value (a ban's `patient_index`, an add attempt's
`id_index`) are moved with the patient rows of the same person.

What each step guarantees:
- Rows are read in primary-key order, one batch at a time, outside any transaction; the crypto work
  happens before the write, so each batch's write transaction is short.
- Each row is written with a compare-and-set on every column that was read: a row the running
  service changed in between is left alone (its new value is the service's, written with the
  current data key) and counted as skipped; running again picks up whatever is left.
- Running again is harmless: a row already on the current keys is not written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from django.apps import apps
from django.db import connection, models, transaction

from guahao import pii
from guahao.fields import EncryptedTextField

Row = dict[str, str | None]


@dataclasses.dataclass(frozen=True)
class Index:
    """A blind-index column and how its clear value is made from the row's (decrypted) columns."""

    column: str
    purpose: str
    clear: Callable[[Row], str]


@dataclasses.dataclass(frozen=True)
class Table:
    model: type[models.Model]
    encrypted: tuple[str, ...]
    plain: tuple[str, ...] = ()  # read only as a source of an index (a patient's document type)
    indexes: tuple[Index, ...] = ()

    @property
    def label(self) -> str:
        return self.model._meta.label_lower

    @property
    def columns(self) -> tuple[str, ...]:
        return self.encrypted + self.plain + tuple(i.column for i in self.indexes)


@dataclasses.dataclass(frozen=True)
class Dependent:
    """A digest of a person's ID kept without the ID itself: moved by the patients' rows."""

    model: type[models.Model]
    column: str

    @property
    def label(self) -> str:
        return f"{self.model._meta.label_lower}.{self.column}"


@dataclasses.dataclass
class Batch:
    table: str
    first_pk: int
    last_pk: int
    read: int = 0
    rotated: int = 0
    skipped: int = 0  # changed by the service between read and write: left as the service wrote it
    dependents: int = 0  # digests moved in tables that keep no clear value


def _phone(row: Row) -> str:
    return row["phone"] or ""


def _index_specs() -> dict[str, tuple[tuple[str, ...], tuple[Index, ...]]]:
    """The blind indexes each model keeps: (plain columns needed, indexes). One place to extend."""
    return {
        "patients.account": ((), (Index("phone_index", "phone", _phone),)),
        "patients.patient": (
            ("id_type",),
            (
                Index("name_index", "name", lambda r: r["name"] or ""),
                # Must match patients.idcard.identity_index: "<document type>:<number>".
                Index(
                    "id_index",
                    "id",
                    lambda r: f"{r['id_type']}:{r['id_number']}" if r["id_number"] else "",
                ),
                Index("phone_index", "phone", _phone),
            ),
        ),
    }


def dependents() -> list[Dependent]:
    return [
        Dependent(apps.get_model("policies", "Restriction"), "patient_index"),
        Dependent(apps.get_model("patients", "PatientAddAttempt"), "id_index"),
    ]


def tables() -> list[Table]:
    """Every table with an encrypted column or a blind index, found from the models."""
    specs = _index_specs()
    found = []
    for model in apps.get_models():
        meta = model._meta
        if meta.proxy or not meta.managed:
            continue
        encrypted = tuple(
            f.column for f in meta.concrete_fields if isinstance(f, EncryptedTextField)
        )
        plain, indexes = specs.get(meta.label_lower, ((), ()))
        if encrypted or indexes:
            found.append(Table(model, encrypted, plain, indexes))
    return sorted(found, key=lambda t: t.label)


# --- reading and working out the new values ------------------------------------------------------


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _read(table: Table, after: int | None, limit: int) -> list[tuple[int, Row]]:
    meta = table.model._meta
    pk = meta.pk.column
    columns = ", ".join(_q(c) for c in table.columns)
    where = f"WHERE {_q(pk)} > %s " if after is not None else ""
    sql = f"SELECT {_q(pk)}, {columns} FROM {_q(meta.db_table)} {where}ORDER BY {_q(pk)} LIMIT %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*([after] if after is not None else []), limit])
        return [(r[0], dict(zip(table.columns, r[1:], strict=True))) for r in cursor.fetchall()]


def _clear(table: Table, pk: int, row: Row) -> Row:
    clear = dict(row)
    for column in table.encrypted:
        value = row[column]
        if value:
            try:
                clear[column] = pii.decrypt(value)
            except ValueError as exc:
                raise ValueError(f"{table.label} #{pk} {column}: {exc}") from exc
    return clear


def _wanted(table: Table, pk: int, row: Row) -> Row:
    """The columns of `row` that differ from what the current keys give (empty when up to date)."""
    clear = _clear(table, pk, row)
    changes: Row = {}
    for column in table.encrypted:
        value = row[column]
        if value and not pii.is_current(value):
            changes[column] = pii.encrypt(clear[column] or "")
    for index in table.indexes:
        stored = row[index.column] or ""
        source = index.clear(clear)
        if not stored and not source:
            continue  # nothing was indexed (an empty value): keep it that way
        digest = pii.blind_index(source, purpose=index.purpose)
        if stored != digest:
            changes[index.column] = digest
    return changes


def _write(table: Table, pk: int, old: Row, changes: Row) -> bool:
    """Compare-and-set: only when every column read still holds what was read."""
    meta = table.model._meta
    sets = ", ".join(f"{_q(c)} = %s" for c in changes)
    conditions, params = [f"{_q(meta.pk.column)} = %s"], [pk]
    for column, value in old.items():
        if value is None:
            conditions.append(f"{_q(column)} IS NULL")
        else:
            conditions.append(f"{_q(column)} = %s")
            params.append(value)
    sql = f"UPDATE {_q(meta.db_table)} SET {sets} WHERE {' AND '.join(conditions)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*changes.values(), *params])
        return cursor.rowcount == 1


def _person_moves(rows: list[tuple[int, Row]], table: Table) -> dict[str, str]:
    """Retired-key digest → current digest of every person in a batch of patient rows."""
    moves: dict[str, str] = {}
    for pk, row in rows:
        clear = _clear(table, pk, row)
        digests = pii.blind_indexes(f"{clear['id_type']}:{clear['id_number']}", purpose="id")
        for old in digests[1:]:
            moves[old] = digests[0]
    return moves


def _move_dependents(moves: dict[str, str]) -> int:
    moved = 0
    if not moves:
        return moved
    for dep in dependents():
        manager = dep.model._default_manager
        stale = manager.filter(**{f"{dep.column}__in": list(moves)}).values_list("pk", dep.column)
        for pk, old in stale:
            # Compare-and-set on the digest itself, like the rows above.
            moved += manager.filter(pk=pk, **{dep.column: old}).update(**{dep.column: moves[old]})
    return moved


# --- the pass ------------------------------------------------------------------------------------


def rotate(
    *, batch_size: int = 500, between: Callable[[Batch], None] | None = None
) -> Iterator[Batch]:
    """Bring every table onto the current keys, one batch (and one short transaction) at a time,
    yielding each batch's counts. `between` runs after a batch is read and before it is written."""
    for table in tables():
        after: int | None = None
        is_patient = table.label == "patients.patient"
        while rows := _read(table, after, batch_size):
            after = rows[-1][0]
            batch = Batch(table.label, rows[0][0], after, read=len(rows))
            planned = [
                (pk, row, changes) for pk, row in rows if (changes := _wanted(table, pk, row))
            ]
            moves = _person_moves(rows, table) if is_patient else {}
            if between is not None:
                between(batch)
            with transaction.atomic():
                for pk, row, changes in planned:
                    if _write(table, pk, row, changes):
                        batch.rotated += 1
                    else:
                        batch.skipped += 1
                batch.dependents = _move_dependents(moves)
            yield batch


@dataclasses.dataclass
class Pending:
    """What still depends on a retired key: while any count is above zero, keep that key."""

    rows: dict[str, int]  # table → rows with an old-key ciphertext or a stale blind index
    dependents: dict[str, int]  # digest column → rows still under a retired index key
    unmatched: dict[str, int]  # digest column → rows matching no patient at all (cannot be moved)
    key_use: dict[str, int]  # data key id → encrypted values under it

    @property
    def total(self) -> int:
        return sum(self.rows.values()) + sum(self.dependents.values())


def pending(*, batch_size: int = 500) -> Pending:
    """Count, without writing, what `rotate` would still change."""
    report = Pending(rows={}, dependents={}, unmatched={}, key_use={})
    deps = dependents()
    stale: dict[str, set[int]] = {dep.label: set() for dep in deps}  # pks: a person may recur
    for table in tables():
        count, after = 0, None
        while rows := _read(table, after, batch_size):
            after = rows[-1][0]
            for pk, row in rows:
                for column in table.encrypted:
                    if row[column]:
                        kid = pii.key_id(row[column])
                        report.key_use[kid] = report.key_use.get(kid, 0) + 1
                count += bool(_wanted(table, pk, row))
            if table.label == "patients.patient" and (moves := _person_moves(rows, table)):
                for dep in deps:
                    found = dep.model._default_manager.filter(**{f"{dep.column}__in": list(moves)})
                    stale[dep.label].update(found.values_list("pk", flat=True))
        report.rows[table.label] = count
    report.dependents = {label: len(pks) for label, pks in stale.items()}
    patient_digests = apps.get_model("patients", "Patient")._default_manager.values("id_index")
    for dep in deps:
        alone = (
            dep.model._default_manager.exclude(**{dep.column: ""})
            .exclude(**{f"{dep.column}__in": patient_digests})
            .count()
        )
        # Rows matching no patient's stored digest, less those a retired digest still reaches.
        report.unmatched[dep.label] = max(0, alone - report.dependents[dep.label])
    return report
