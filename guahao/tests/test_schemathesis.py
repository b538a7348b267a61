"""The whole API against its own OpenAPI, by Schemathesis: every operation with generated valid and
invalid input (examples, coverage and fuzzing phases), then chains of calls that feed one answer's
ids into the next (the stateful phase). No answer may be a server error, and every answer must match
the schema the API publishes. Requests are signed in as a patient who has a hold, a registration
and messages, so the signed-in operations answer with real data, not only 401 and 404."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from guahao.booking import services as booking
from guahao.booking.tests.conftest import loosen_caps, ready_to_book, registered
from guahao.catalog.models import Notice
from guahao.notifications.models import InboxMessage
from guahao.patients.models import Account
from guahao.testing import (
    make_account,
    make_department,
    make_doctor,
    make_hospital,
    make_ip,
    make_session,
    token_for,
)


class InTestTransaction:
    """Django's WSGI handler as Schemathesis calls it, inside the test's transaction: like Django's
    test client, it keeps the end of a request from closing the test's database connection. Each
    request comes from an address of its own, as from many phones, so the per-address limits do not
    turn the run into a run of 429s."""

    def __init__(self) -> None:
        self.handler = WSGIHandler()

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        environ["REMOTE_ADDR"] = make_ip()
        # Schemathesis asks for gzip but its WSGI client does not unpack it.
        environ.pop("HTTP_ACCEPT_ENCODING", None)
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            response = self.handler(environ, start_response)
            try:
                body = b"".join(response)
            finally:
                response.close()  # sends request_finished, as a WSGI server would
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
        return [body]


# Seeded and small: the same requests every run, and the whole file in under a minute.
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20260301,
        "generation": {"deterministic": True},
        # Other methods on each path: one 405 answer, tested once in test_api_errors.py.
        "phases": {"coverage": {"unexpected-methods": []}},
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
        },
    }
)
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", InTestTransaction(), config=CONFIG)

QUICK = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclasses.dataclass
class Patient:
    """The signed-in patient of the run and the ids of what they own or may see."""

    account: Account
    ids: dict[str, list[int]]

    def headers(self) -> dict[str, str]:
        # A token per request: the run may sign itself out (POST /auth/logout) at any step.
        return {"Authorization": f"Bearer {token_for(self.account)}"}


# The ids of the current test's data, by parameter name: read by the hooks below at draw time.
_known: dict[str, list[int]] = {}


@pytest.fixture
def patient(db, settings) -> Patient:
    # One account makes every request: its own hold and patient-adding limits would answer most
    # of them with 429 (the per-address limits stay, each request having an address of its own).
    settings.LIMITS = {**settings.LIMITS, "hold_account": "off", "patient_add_account": "off"}
    hospital = make_hospital()
    loosen_caps(hospital)
    parent = make_department(hospital, name="内科")
    department = make_department(hospital, name="心血管内科", parent=parent)
    doctor = make_doctor(department, name="李建国")
    session = make_session(department, doctor=doctor, slots=12, fee_fen=2500)
    account = make_account()
    visitor = ready_to_book(account, hospital)
    registration = registered(account, visitor, session, seq=1)
    hold = booking.hold_slot(account=account, slot_id=session.slots.get(seq=2).id)
    ids = {
        "hospital_id": [hospital.id],
        "department_id": [department.id, parent.id],
        "doctor_id": [doctor.id],
        "session_id": [session.id],
        "slot_id": list(session.slots.values_list("id", flat=True)),
        "patient_id": [visitor.id],
        "hold_id": [hold.id, registration.hold_id],
        "registration_id": [registration.id],
        "notice_id": list(Notice.objects.filter(hospital=hospital).values_list("id", flat=True)),
        "message_id": list(InboxMessage.objects.filter(account=account).values_list("id", flat=True)),
        "token_id": list(account.tokens.values_list("id", flat=True)),
    }
    _known.clear()
    _known.update(ids)
    yield Patient(account, ids)
    _known.clear()


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> st.SearchStrategy:
    """Half of the generated ids are replaced by ids of the patient's own data, so an operation on
    a hold or a registration reaches the code behind the 404 too."""
    names = [name for name in path_parameters or () if _known.get(name)]
    if not names:
        return st.just(path_parameters)
    real = st.fixed_dictionaries({name: st.sampled_from(_known[name]) for name in names})
    return st.one_of(st.just(path_parameters), real.map(lambda found: {**path_parameters, **found}))


# Ids a body may leave out, which the generated bodies then mostly lack.
_OPTIONAL_BODY_IDS = {"/api/v1/holds": ("slot_id",)}


@schema.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy:
    """Likewise for ids in a JSON body (the slot of a new hold, the patient of a confirmation)."""
    if not isinstance(body, dict):
        return st.just(body)
    optional = _OPTIONAL_BODY_IDS.get(context.operation.path, ()) if context.operation else ()
    # In a fixed order: the draws, and so the requests, are the same every run.
    names = [name for name in (*body, *(n for n in optional if n not in body)) if _known.get(name)]
    if not names:
        return st.just(body)
    real = st.fixed_dictionaries({name: st.sampled_from(_known[name]) for name in names})
    return st.one_of(st.just(body), real.map(lambda found: {**body, **found}))


@schema.parametrize()
@QUICK
def test_every_operation_answers_without_server_errors_and_as_documented(case, patient):
    response = case.call_and_validate(headers=patient.headers())  # raises on any failed check
    assert response.status_code < 500


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    """Chains of calls whose ids come from earlier answers (links inferred from the schema)."""

    patient: Patient
    statuses: list[int] = []

    def get_call_kwargs(self, case) -> dict[str, Any]:
        return {"headers": self.patient.headers()}

    def after_call(self, response, case) -> None:
        self.statuses.append(response.status_code)


def test_chains_of_calls_answer_without_server_errors_and_as_documented(patient):
    Workflow.patient = patient
    Workflow.statuses = []
    Workflow.run(
        settings=settings(
            QUICK,
            max_examples=8,
            stateful_step_count=6,
        )
    )
    # Every failed check raised inside run(); here: the chains really ran, and none hit a 5xx.
    assert len(Workflow.statuses) >= 8
    assert all(status < 500 for status in Workflow.statuses), Workflow.statuses
