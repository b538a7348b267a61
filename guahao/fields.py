"""Model fields for personal data: encrypted on the way in, decrypted on the way out."""

from __future__ import annotations

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
