"""Test-wide setup: every log line of the run also goes to var/test-run.log (JSON, as in
production), which the privacy test greps for phone and ID numbers in clear."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db.backends.signals import connection_created
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from guahao.logs import JsonFormatter, MaskPersonalDataFilter
from guahao.sqlguard import refuse_joined_state_updates

_SUFFIX = os.environ.get("GUAHAO_TEST_DB_SUFFIX", "")
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1 … under pytest-xdist
TEST_LOG = settings.VAR_DIR / f"test-run{_SUFFIX}{'-' + _WORKER if _WORKER else ''}.log"
VERDICT = TEST_LOG.with_suffix(".verdict")


# The model-based tests: 300 examples in `make test`; GUAHAO_HYPOTHESIS_PROFILE=long for a night run.
hypothesis_settings.register_profile(
    "default",
    max_examples=300,
    stateful_step_count=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
hypothesis_settings.register_profile("long", parent=hypothesis_settings.get_profile("default"), max_examples=5000, stateful_step_count=30)
hypothesis_settings.register_profile("quick", parent=hypothesis_settings.get_profile("default"), max_examples=30)
hypothesis_settings.load_profile(os.environ.get("GUAHAO_HYPOTHESIS_PROFILE", "default"))


def _guard_connection(sender, connection, **kwargs) -> None:
    if refuse_joined_state_updates not in connection.execute_wrappers:
        connection.execute_wrappers.append(refuse_joined_state_updates)


def pytest_configure(config: pytest.Config) -> None:
    # Every state-changing UPDATE in the whole run must be a compare-and-set on its own row.
    connection_created.connect(_guard_connection, weak=False)
    # The scheduled jobs (release from templates, reconciliation, reminders …) run only in the
    # tests that switch them on: otherwise a run at 06:00 Beijing time would release sessions into
    # every other test's data.
    if "GUAHAO_SCHEDULER_JOBS" not in os.environ:
        settings.SCHEDULER_JOBS = []
    # Tests read right after they write: the one-second schedule answers are switched on only by
    # the tests of that cache.
    settings.FRESH_SECONDS = 0
    if not _WORKER:  # the controller (or a plain run): no verdict of an earlier run may count
        for stale in settings.VAR_DIR.glob(f"test-run{_SUFFIX}-gw*.*"):
            stale.unlink()
    handler = logging.FileHandler(TEST_LOG, mode="w", encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    handler.addFilter(MaskPersonalDataFilter())
    handler.set_name("test-run-log")
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Browser tests run last: Playwright's sync API keeps an event loop in the main thread for the
    # rest of the session, and Django refuses ORM calls beside it unless DJANGO_ALLOW_ASYNC_UNSAFE
    # is set, which only the browser tests may have. (Under pytest-xdist each worker receives the
    # tests in this order, so the same holds per worker.)
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        skip = pytest.mark.skip(reason="needs PostgreSQL (set GUAHAO_DATABASE_URL)")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


def _log_problems() -> list[str]:
    """What this process's log of the run holds in clear: phones, ID numbers, patients' names or
    birth dates. Empty when it is clean."""
    import re

    for handler in logging.getLogger().handlers:
        handler.flush()
    if not TEST_LOG.exists():
        return []
    problems = []
    text = TEST_LOG.read_text(encoding="utf-8")
    clear = re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)|(?<![0-9A-Za-z])\d{17}[0-9Xx](?![0-9A-Za-z])", text)
    if clear:
        problems.append(f"A phone or ID number reached the test run's log in clear: {TEST_LOG}")
    folded = text.casefold()
    names = sorted(name for name in _patient_names() if name.casefold() in folded)
    if names:
        problems.append(f"Visiting patients' names reached the test run's log in clear ({', '.join(names)}): {TEST_LOG}")
    from guahao.testing import PATIENT_BIRTH_DATES

    births = sorted(str(d) for d in PATIENT_BIRTH_DATES if d.isoformat() in text)
    if births:
        problems.append(f"Visiting patients' birth dates reached the test run's log in clear ({', '.join(births)}): {TEST_LOG}")
    return problems


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The logs of the whole run must hold no phone, ID number or visiting patient's name in clear.
    Under pytest-xdist each worker checks its own log (only it knows the names its tests made) and
    leaves a verdict file; the controller reads them and fails the run."""
    if _WORKER:
        VERDICT.write_text("\n".join(_log_problems()), encoding="utf-8")
        return
    problems = _log_problems()
    for verdict in sorted(settings.VAR_DIR.glob(f"test-run{_SUFFIX}-gw*.verdict")):
        problems += [line for line in verdict.read_text(encoding="utf-8").splitlines() if line]
    if problems:
        print("\n" + "\n".join(problems))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# Names the tests give visiting patients through the API and services (make_patient records its own).
_API_PATIENT_NAMES = ("张三丰", "欧阳娜娜", "赵六", "王芳", "周杰", "张小明", "李娜", "别人家", "John Smith", "李五", "钱七")


def _patient_names() -> set[str]:
    from guahao.patients.realname.sandbox import ON_FILE
    from guahao.testing import PATIENT_NAMES

    # Compared case-folded: JOHN SMITH is John Smith.
    return set(_API_PATIENT_NAMES) | set(ON_FILE.values()) | PATIENT_NAMES


@pytest.fixture
def admin_client(db):
    """pytest-django's admin client, signed in as the console demands (password and TOTP)."""
    from guahao.console.testing import superuser_client

    return superuser_client()


# --- browser tests (guahao/web/tests, guahao/console/tests) -------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            yield chromium
            chromium.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def site(browser, live_server) -> Iterator[str]:
    """The live server's address, which is also the public URL the payment sandbox's cashier sends
    the browser back to and posts notifications to. DJANGO_ALLOW_ASYNC_UNSAFE is set by `browser`
    (see there)."""
    public_url = settings.PUBLIC_URL
    settings.PUBLIC_URL = live_server.url
    try:
        yield live_server.url
    finally:
        settings.PUBLIC_URL = public_url


@pytest.fixture(scope="session", autouse=True)
def payment_sandbox():
    """The payment providers' sandbox gateway (WeChat Pay v3 and Alipay on the wire), served on a
    loopback port for the whole run; hospitals without a merchant account pay through it, as in
    `make run`. It keeps guahao's clock, so moving the clock moves it too. Its notifications are
    delivered by `guahao.testing.run_worker()` (or `deliver_notifications()`) through Django's test
    client."""
    from guahao import clock, testing
    from guahao.payments.sandbox import SandboxKeys, running_gateway

    keys_path = settings.VAR_DIR / "pay-sandbox-keys-test.json"
    keys = SandboxKeys.load_or_create(keys_path)  # generated once, shared by the xdist workers
    with running_gateway(keys, now=clock.now) as gateway:
        settings.PAY_SANDBOX_URL = gateway.url
        settings.PAY_SANDBOX_KEYS = keys_path
        # Child processes (crash and race tests) reach the same gateway.
        os.environ["GUAHAO_PAY_SANDBOX_URL"] = gateway.url
        os.environ["GUAHAO_PAY_SANDBOX_KEYS"] = str(keys_path)
        testing.use_payment_sandbox(gateway)
        yield gateway


@pytest.fixture
def fresh(settings):
    """The release burst's one-second reuse as deployed (GUAHAO_FRESH_SECONDS=1; the suite runs with
    it off): the schedule answers and the sold-out memory start empty and are emptied after."""
    from guahao.booking.soldout import sold_out
    from guahao.scheduling.api import answers

    settings.FRESH_SECONDS = 1
    answers.clear()
    sold_out.clear()
    yield
    answers.clear()
    sold_out.clear()
