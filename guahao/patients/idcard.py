"""What a real-name identity must look like: the ID number for its document type, the name, the
mobile phone. Every refusal is an InvalidInput whose Chinese message names the field.

Our own code rather than python-stdnum, which rejects residence permits and foreigner IDs.

Document types (Patient.IdType), all 18 characters, 17 digits and a GB 11643 MOD 11-2 check
character (0–9 or X), with the birth date in characters 7–14 and the sex in the 17th (odd = male):
- resident: 居民身份证, the first two digits a province code of GB/T 2260;
- hmt_residence: 港澳台居民居住证, starting 81 (Hong Kong), 82 (Macau) or 83 (Taiwan);
- foreigner: 外国人永久居留身份证 of 2023, starting 9.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass

from guahao import clock, pii
from guahao.errors import InvalidInput
from guahao.patients.models import Patient

IdType = Patient.IdType
Sex = Patient.Sex

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_EARLIEST_BIRTH = dt.date(1900, 1, 1)

# Provincial codes of GB/T 2260 (71 is Taiwan, listed by the standard).
_PROVINCES = frozenset(
    {
        "11", "12", "13", "14", "15",
        "21", "22", "23",
        "31", "32", "33", "34", "35", "36", "37",
        "41", "42", "43", "44", "45", "46",
        "50", "51", "52", "53", "54",
        "61", "62", "63", "64", "65",
        "71",
    }
)  # fmt: skip
_HMT_PREFIXES = frozenset({"81", "82", "83"})
_ID_TYPE_NAMES = dict(IdType.choices)


@dataclass(frozen=True)
class IdCardInfo:
    """A checked ID number and what it says about its holder."""

    id_type: str
    number: str
    sex: str
    birth_date: dt.date

    def age(self, on: dt.date | None = None) -> int:
        return age_on(self.birth_date, on or clock.today())


def check_character(first17: str) -> str:
    """The GB 11643 MOD 11-2 check character for 17 digits."""
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def age_on(birth_date: dt.date, day: dt.date) -> int:
    """Full years on `day` (someone born on 29 February turns a year older on 1 March)."""
    had_birthday = (day.month, day.day) >= (birth_date.month, birth_date.day)
    return day.year - birth_date.year - (0 if had_birthday else 1)


def normalize_id_number(id_number: str) -> str:
    """Full-width characters to ASCII, spaces dropped, x to X: how people type and paste IDs."""
    text = unicodedata.normalize("NFKC", id_number or "")
    return re.sub(r"\s+", "", text).upper()


def identity_index(info: IdCardInfo) -> str:
    """The blind index that finds one real person by document, across accounts and hospitals."""
    return pii.blind_index(f"{info.id_type}:{info.number}", purpose="id")


def identity_indexes(info: IdCardInfo) -> list[str]:
    """`identity_index` under every index key, current first: what lookups use while keys rotate."""
    return pii.blind_indexes(f"{info.id_type}:{info.number}", purpose="id")


def parse_id_number(
    id_number: str, *, id_type: str = IdType.RESIDENT, today: dt.date | None = None
) -> IdCardInfo:
    """Check `id_number` as a document of `id_type`; raise InvalidInput naming what is wrong."""
    if id_type not in _ID_TYPE_NAMES:
        raise InvalidInput("证件类型不正确", code="invalid_id_type")
    number = normalize_id_number(id_number)
    if not number:
        raise InvalidInput("请填写证件号码", code="invalid_id_number")
    if len(number) != 18:
        raise InvalidInput("证件号码应为18位", code="invalid_id_number")
    if not re.fullmatch(r"\d{17}[\dX]", number):
        raise InvalidInput("证件号码只能包含数字，最后一位可以是X", code="invalid_id_number")
    _check_prefix(number, id_type)
    birth_date = _birth_date(number[6:14], today or clock.today())
    if number[17] != check_character(number[:17]):
        raise InvalidInput("证件号码校验位不正确", code="invalid_id_number")
    sex = Sex.MALE if int(number[16]) % 2 else Sex.FEMALE
    return IdCardInfo(id_type=str(id_type), number=number, sex=str(sex), birth_date=birth_date)


def _check_prefix(number: str, id_type: str) -> None:
    if id_type == IdType.RESIDENT:
        if number[:2] in _HMT_PREFIXES:
            raise InvalidInput(
                "证件号码以81、82、83开头的是港澳台居民居住证，请将证件类型选为“港澳台居民居住证”",
                code="invalid_id_number",
            )
        if number[0] == "9":
            raise InvalidInput(
                "证件号码以9开头的是外国人永久居留身份证，请将证件类型选为“外国人永久居留身份证”",
                code="invalid_id_number",
            )
        if number[:2] not in _PROVINCES:
            raise InvalidInput("证件号码的前两位不是有效的省级地区码", code="invalid_id_number")
    elif id_type == IdType.HMT_RESIDENCE:
        if number[:2] not in _HMT_PREFIXES:
            raise InvalidInput("港澳台居民居住证号码应以81、82或83开头", code="invalid_id_number")
    elif id_type == IdType.FOREIGNER and number[0] != "9":
        raise InvalidInput("外国人永久居留身份证号码应以9开头", code="invalid_id_number")


def _birth_date(digits: str, today: dt.date) -> dt.date:
    try:
        birth = dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise InvalidInput("证件号码中的出生日期不存在", code="invalid_id_number") from None
    if birth > today:
        raise InvalidInput("证件号码中的出生日期晚于今天", code="invalid_id_number")
    if birth < _EARLIEST_BIRTH:
        raise InvalidInput("证件号码中的出生日期早于1900年", code="invalid_id_number")
    return birth


# --- mobile phone ---------------------------------------------------------------------------------

_PHONE_RE = re.compile(r"1[3-9]\d{9}")


def validate_phone(phone: str) -> str:
    """A mainland mobile number, returned as its 11 digits (spaces, dashes and +86 removed)."""
    text = re.sub(r"[\s-]+", "", unicodedata.normalize("NFKC", phone or ""))
    if not text:
        raise InvalidInput("请填写手机号", code="invalid_phone")
    if text.startswith("+86"):
        text = text[3:]
    if not _PHONE_RE.fullmatch(text):
        raise InvalidInput("手机号格式不正确", code="invalid_phone")
    return text


# --- name -----------------------------------------------------------------------------------------

# CJK unified ideographs incl. extensions A–F (rare characters are common in names), Latin letters,
# the middle dot of transliterated names, and single spaces between Latin words.
_NAME_CHARS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002ebefA-Za-z· ]+")
_DOT_VARIANTS = str.maketrans({".": "·", "•": "·", "・": "·", "‧": "·", "∙": "·", "．": "·"})


def validate_name(name: str) -> str:
    """A name as on the ID document: 2–30 characters, Chinese or Latin letters and ·."""
    text = " ".join(unicodedata.normalize("NFC", name or "").translate(_DOT_VARIANTS).split())
    if not text:
        raise InvalidInput("请填写姓名", code="invalid_name")
    if not 2 <= len(text) <= 30:
        raise InvalidInput("姓名应为2至30个字", code="invalid_name")
    if not _NAME_CHARS.fullmatch(text):
        raise InvalidInput("姓名只能包含汉字、英文字母和间隔号“·”", code="invalid_name")
    if text[0] == "·" or text[-1] == "·" or "··" in text:
        raise InvalidInput("姓名中的间隔号“·”位置不正确", code="invalid_name")
    return text
