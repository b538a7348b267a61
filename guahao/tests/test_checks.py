"""`guahao check --deploy` keeps one warning of ours; what production must not start with is
refused at start instead (test_environment.py)."""

from guahao.checks import sqlite_beyond_one_machine


def test_sqlite_is_flagged_for_a_look_before_deploying(settings):
    if not settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        assert sqlite_beyond_one_machine(None) == []
        return
    assert [w.id for w in sqlite_beyond_one_machine(None)] == ["guahao.W002"]
