"""Bots cannot empty a release: holds are limited per account and per address, whichever account
the address signs in with."""

from __future__ import annotations

from guahao.booking.models import Hold
from guahao.booking.tests.conftest import loosen_caps, ready_to_book
from guahao.testing import ApiClient, make_account, make_session, token_for

BOT_FARM = "198.51.100.99"


def test_five_fresh_accounts_from_one_address_cannot_hold_ten_slots(world) -> None:
    session = make_session(world.department, slots=12)
    slots = list(session.slots.order_by("seq"))
    clients = []
    for _ in range(5):
        account = make_account()
        ready_to_book(account, world.hospital)
        clients.append(ApiClient(token=token_for(account), ip=BOT_FARM))

    answers = [clients[i // 2].post("/api/v1/holds", {"slot_id": slot.id}) for i, slot in enumerate(slots[:10])]

    statuses = [a.status_code for a in answers]
    assert statuses == [201] * 6 + [429] * 4  # hold_ip: 6 in ten minutes
    refused = answers[-1]
    assert refused.json()["message"].startswith("锁号过于频繁")
    assert 0 < int(refused["Retry-After"]) <= 600
    assert Hold.objects.filter(session=session).count() == 6
    # Patients elsewhere still get the rest.
    elsewhere = make_account()
    ready_to_book(elsewhere, world.hospital)
    assert ApiClient(token=token_for(elsewhere)).post("/api/v1/holds", {"slot_id": slots[10].id}).status_code == 201


def test_one_account_from_many_addresses_is_limited_too(world) -> None:
    loosen_caps(world.hospital)  # past the release rule's caps, the address-free limit still holds
    session = make_session(world.department, slots=6)
    account = make_account()
    ready_to_book(account, world.hospital)
    token = token_for(account)
    statuses = [
        ApiClient(token=token).post("/api/v1/holds", {"slot_id": slot.id}).status_code
        for slot in session.slots.order_by("seq")
    ]
    assert statuses == [201] * 4 + [429] * 2  # hold_account: 4 in ten minutes


def test_the_limits_are_configuration(world, settings) -> None:
    settings.LIMITS = {**settings.LIMITS, "hold_account": "off", "hold_ip": "8/10m"}
    loosen_caps(world.hospital)
    session = make_session(world.department, slots=9)
    account = make_account()
    ready_to_book(account, world.hospital)
    client = ApiClient(token=token_for(account), ip=BOT_FARM)
    statuses = [client.post("/api/v1/holds", {"slot_id": s.id}).status_code for s in session.slots.all()]
    assert statuses == [201] * 8 + [429]
