"""Model fields for personal data: encrypted on the way in, decrypted on the way out."""

from __future__ import annotations

import datetime as dt

from django.db import models

from guahao import pii


class EncryptedTextField(models.TextField):
    """Stores SM4-GCM ciphertext; Python code sees the clear value. Not searchable: pair it with a
    blind index column for lookups."""

    def from_db_value(self, value, expression, connection):  # noqa: ARG002 (Django's signature)
        if value is None or value == "":
            return value
        return pii.decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return pii.encrypt(value)


class EncryptedDateField(EncryptedTextField):
    """A date stored as encrypted ISO text (1990-03-07), seen by Python code as a `datetime.date`.
    Birth dates are personal data: no range queries, only what the row itself says."""

    def from_db_value(self, value, expression, connection):  # noqa: ARG002 (Django's signature)
        text = super().from_db_value(value, expression, connection)
        return self.to_python(text)

    def to_python(self, value):
        if value is None or value == "" or isinstance(value, dt.date):
            return value or None
        return dt.date.fromisoformat(str(value))

    def get_prep_value(self, value):
        value = self.to_python(value)
        return None if value is None else pii.encrypt(value.isoformat())

    def value_to_string(self, obj) -> str:
        value = self.value_from_object(obj)
        return "" if value is None else value.isoformat()
