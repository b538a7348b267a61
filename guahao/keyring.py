"""Key lists for personal data, read from settings without Django: `GUAHAO_DATA_KEYS` and
`GUAHAO_INDEX_KEYS` hold "id:hex,id:hex", the first entry the current key (new rows) and the rest
retired keys (still read and still looked up, never written), so keys rotate without downtime.

`GUAHAO_DATA_KEY` / `GUAHAO_INDEX_KEY` keep working: each is the key with id "1" (the key of `v1:`
ciphertext), current when it is the only one, retired when a `*_KEYS` list names another first.
"""

from __future__ import annotations

import re

LEGACY_KID = "1"
_KID = re.compile(r"^[0-9a-z]{1,8}$")


class KeyringError(ValueError):
    """A key list that cannot be read; the message is "中文 / English" like the start-up checks."""


def parse(setting: str, text: str) -> list[tuple[str, str]]:
    """ "2:abcd…,1:ef01…" → [("2", "abcd…"), ("1", "ef01…")], in order (the first is current)."""
    entries: list[tuple[str, str]] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        kid, sep, hex_key = part.partition(":")
        kid = kid.strip().lower()
        if not sep or not _KID.match(kid) or not hex_key.strip():
            raise KeyringError(
                f"{setting} 每一项应为“编号:十六进制密钥”，编号为 1–8 位小写字母或数字 / "
                f"{setting} entries must be id:hex with an id of 1-8 lowercase letters or digits"
            )
        if kid in dict(entries):
            raise KeyringError(f"{setting} 中编号 {kid} 重复 / {setting} lists key id {kid} twice")
        entries.append((kid, hex_key.strip()))
    return entries


def combine(
    setting: str, keys_text: str, single_setting: str, single: str
) -> list[tuple[str, str]]:
    """The whole key list: the `*_KEYS` entries, then the single `*_KEY` as key "1" if unlisted."""
    entries = parse(setting, keys_text)
    if single:
        listed = dict(entries)
        if LEGACY_KID not in listed:
            entries.append((LEGACY_KID, single))
        elif listed[LEGACY_KID].lower() != single.lower():
            raise KeyringError(
                f"{setting} 中编号 1 的密钥与 {single_setting} 不同 / "
                f"{setting} gives key 1 a different value from {single_setting}"
            )
    return entries
