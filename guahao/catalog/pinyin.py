"""Pinyin of department and doctor names, stored next to the name so that search is a prefix or
contains match on indexed columns (`pfk` → 皮肤科, `xinxueguan` → 心血管内科, `ljg` → 李建国).

pypinyin picks one reading per character; for heteronyms (重, 长, 行 …) its phrase dictionary
usually picks right, and the phrases below pin the readings department names need whatever
pypinyin's segmentation does. Surnames read differently from the same character elsewhere
(曾 zeng, not ceng; 单 shan, not dan), so a doctor's surname has a table of its own.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable

# Phrases in department names whose reading pypinyin must not guess: (phrase, one reading per
# character). Loaded once into pypinyin's (process-wide) phrase dictionary.
DEPARTMENT_PHRASES: dict[str, str] = {
    "重症": "zhong zheng",
    "危重": "wei zhong",
    "行为": "xing wei",
    "长春": "chang chun",
    "生长": "sheng zhang",
    "发育": "fa yu",
    "颌面": "he mian",
    "内分泌": "nei fen mi",
    "泌尿": "mi niao",
    "输血": "shu xue",
    "血液": "xue ye",
    "血管": "xue guan",
    "血透": "xue tou",
    "银行": "yin hang",
    "中医": "zhong yi",
    "重庆": "chong qing",
    "传染": "chuan ran",
    "创伤": "chuang shang",
    "睡眠": "shui mian",
    "调理": "tiao li",
    "便秘": "bian mi",
    "乳腺": "ru xian",
}

# Surnames whose reading differs from the character's everyday one. Compound surnames first.
SURNAMES: dict[str, str] = {
    "尉迟": "yu chi",
    "万俟": "mo qi",
    "单于": "chan yu",
    "长孙": "zhang sun",
    "曾": "zeng",
    "单": "shan",
    "解": "xie",
    "查": "zha",
    "区": "ou",
    "仇": "qiu",
    "朴": "piao",
    "翟": "zhai",
    "缪": "miao",
    "乐": "yue",
    "覃": "qin",
    "盖": "ge",
    "种": "chong",
    "召": "shao",
    "隗": "wei",
    "员": "yun",
    "繁": "po",
    "过": "guo",
    "秘": "bi",
    "冼": "xian",
    "瞿": "qu",
    "句": "gou",
}


@functools.cache
def _pinyin() -> Callable[[str], list[str]]:
    """pypinyin, loaded when a name is first romanized: its dictionaries take over a second to load,
    which every process start (a restart after a crash too) would pay, while requests only need
    search_key and has_chinese."""
    from pypinyin import Style, lazy_pinyin, load_phrases_dict

    load_phrases_dict({phrase: [[s] for s in reading.split()] for phrase, reading in DEPARTMENT_PHRASES.items()})
    return functools.partial(lazy_pinyin, style=Style.NORMAL)


_HAN = r"\u3400-\u9fff\uf900-\ufaff"
_RUNS = re.compile(f"[{_HAN}]+|[^{_HAN}]+")
_LATIN = re.compile(r"[0-9a-z]+")


def _normal(text: str) -> str:
    # NFKC: full-width ＣＴ and Ⅱ become CT and II, as patients type them.
    return unicodedata.normalize("NFKC", text).strip().lower().replace("ü", "v")


def _items(text: str) -> list[tuple[str, bool]]:
    """(item, is_pinyin): the pinyin of each Chinese character, and each run of Latin letters or
    digits as it is; punctuation and spaces are dropped. Chinese runs go to pypinyin whole, so its
    phrases (and ours) decide the heteronyms."""
    items: list[tuple[str, bool]] = []
    for run in _RUNS.findall(_normal(text)):
        if has_chinese(run):
            items.extend((s, True) for s in _pinyin()(run) if s)
        else:
            items.extend((s, False) for s in _LATIN.findall(run))
    return items


def _join(items: list[tuple[str, bool]]) -> tuple[str, str]:
    # A Latin run is its own initials (CT室 → cts), so `ct` finds it both ways.
    return "".join(s for s, _ in items), "".join(s[0] if is_pinyin else s for s, is_pinyin in items)


def romanize(name: str) -> tuple[str, str]:
    """(full pinyin, initials) of a department name: 心血管内科 → ("xinxueguanneike", "xxgnk"),
    CT室 → ("ctshi", "cts")."""
    return _join(_items(name))


def romanize_person(name: str) -> tuple[str, str]:
    """As `romanize`, reading the first character (or a compound surname) as a surname:
    曾志华 → ("zengzhihua", "zzh"), not ceng."""
    name = _normal(name)
    for surname, reading in SURNAMES.items():
        if name.startswith(surname):
            return _join([(s, True) for s in reading.split()] + _items(name[len(surname):]))
    return romanize(name)


def search_key(query: str) -> str:
    """What a Latin query is compared with: lower case, letters and digits only (`Xin Xue'guan` →
    `xinxueguan`, `lü` → `lv`)."""
    return "".join(_LATIN.findall(_normal(query)))


def has_chinese(text: str) -> bool:
    return re.search(f"[{_HAN}]", text) is not None
