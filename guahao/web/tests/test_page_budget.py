"""Every patient page at the narrowest phone (320 px): no sideways scrolling, and under 150 KB as
transferred (HTML, CSS and JS gzip-compressed as whitenoise and GZipMiddleware send them; images
not counted). Add a page by adding its path (a function of the world) to PAGES."""

from __future__ import annotations

import gzip

import pytest

pytestmark = pytest.mark.browser

BUDGET = 150 * 1024

def _a_live_hold(world, account) -> str:
    """The hold page needs a hold of the signed-in patient: make one the way the page would."""
    from guahao.booking import services

    slot = world.open_session.slots.filter(state="free").order_by("seq").first()
    return f"/holds/{services.hold_slot(account=account, slot_id=slot.id).id}"


# (name, path for the world and the signed-in account, needs a signed-in patient).
PAGES = [
    ("home", lambda w, a: "/", False),
    ("login", lambda w, a: "/login", False),
    ("notices", lambda w, a: "/notices", False),
    ("departments", lambda w, a: "/departments", False),
    ("department", lambda w, a: f"/departments/{w.skin.id}", False),
    ("doctor", lambda w, a: f"/doctors/{w.peng.id}", False),
    ("search", lambda w, a: "/search?q=pfk", False),
    ("session", lambda w, a: f"/sessions/{w.open_session.id}", False),
    ("registrations", lambda w, a: "/me/registrations?tab=booked", True),
    ("patients", lambda w, a: "/me/patients", True),
    ("patient-add", lambda w, a: "/me/patients/add", True),
    ("hold", _a_live_hold, True),
]


def _transferred(responses) -> int:
    total = 0
    for response in responses:
        if response.request.resource_type in ("image", "media", "font"):
            continue
        body = response.body()
        encoding = response.headers.get("content-encoding", "")
        total += len(body) if encoding == "gzip" else len(gzip.compress(body))
    return total


@pytest.mark.parametrize("elder", [False, True], ids=["standard", "elder"])
def test_pages_fit_a_320px_phone_and_the_weight_budget(browser, site, browser_world, account, signed_in, elder) -> None:
    context = browser.new_context(viewport={"width": 320, "height": 640}, locale="zh-CN", is_mobile=True)
    if elder:
        context.add_cookies([{"name": "elder", "value": "1", "url": site}])
    page = context.new_page()
    try:
        signed = False  # the token lives in the server-side session, not in a cookie of its own
        for name, path_for, needs_account in PAGES:
            if needs_account and not signed:
                signed_in(page, account)
                signed = True
            responses: list = []

            def record(response, responses=responses) -> None:
                responses.append(response)

            page.on("response", record)
            page.goto(site + path_for(browser_world, account), wait_until="networkidle")
            page.remove_listener("response", record)
            assert page.evaluate("document.documentElement.scrollWidth") <= 320, name
            weight = _transferred(responses)
            assert weight < BUDGET, f"{name}: {weight} bytes"
    finally:
        context.close()
