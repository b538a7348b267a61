"""The patient pages in a real browser (Debian's Chromium, 375×812 like a phone in WeChat):
signing in through the form, finding 皮肤科 by its initials, the schedule strip, and 长辈版."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_sign_in_through_the_form_and_stay_signed_in(phone, site, browser_world, signed_in, account, shot) -> None:
    phone.goto(f"{site}/login")
    shot(phone, "login")
    signed_in(phone, account, next_path="/departments")
    # A first sign-in owes the notices before any booking.
    assert "/notices" in phone.url
    shot(phone, "notices")
    with phone.expect_navigation():
        phone.click("text=我已阅读并同意以上须知")
    assert phone.url.endswith("/departments")
    phone.reload()
    phone.goto(f"{site}/")
    assert phone.locator("text=退出登录").is_visible()
    shot(phone, "home-signed-in")


def test_search_pfk_reaches_the_skin_clinic(phone, site, browser_world, shot) -> None:
    phone.goto(f"{site}/search")
    phone.fill("#search-q", "pfk")
    link = phone.locator("#results a", has_text="皮肤科")
    link.wait_for()
    shot(phone, "search")
    with phone.expect_navigation():
        link.click()
    assert phone.url.endswith(f"/departments/{browser_world.skin.id}")
    assert phone.locator("h1", has_text="皮肤科").is_visible()


def test_the_schedule_strip_swaps_the_chosen_date(phone, site, browser_world, shot) -> None:
    phone.goto(f"{site}/departments/{browser_world.skin.id}")
    strip = phone.locator(".strip")
    assert "有号(6)" in strip.inner_text() and "约满" in strip.inner_text() and "停诊" in strip.inner_text()
    assert phone.locator(".sessions", has_text="彭飞").is_visible()
    shot(phone, "department")
    suspended = browser_world.day(3).isoformat()
    phone.click(f'[data-date="{suspended}"]')
    phone.locator(f'[data-date="{suspended}"][aria-current="date"]').wait_for()
    assert "停诊" in phone.locator(".sessions").inner_text()
    assert phone.url.endswith(f"?date={suspended}")  # the chosen date survives a reload
    phone.goto(f"{site}/departments")
    shot(phone, "departments")
    phone.goto(f"{site}/doctors/{browser_world.peng.id}")
    shot(phone, "doctor")


def _largest_and_smallest_text(page) -> tuple[float, float]:
    return page.evaluate(
        """() => {
          const sizes = [];
          const walker = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
          while (walker.nextNode()) {
            const node = walker.currentNode;
            if (!node.textContent.trim()) continue;
            const el = node.parentElement;
            if (!el.offsetParent) continue;
            sizes.push(parseFloat(getComputedStyle(el).fontSize));
          }
          return [Math.max(...sizes), Math.min(...sizes)];
        }"""
    )


def test_elder_mode_has_large_text_and_large_tap_targets(phone, site, browser_world, shot) -> None:
    phone.goto(f"{site}/departments/{browser_world.skin.id}")
    with phone.expect_navigation():
        phone.click("[data-testid=elder-toggle]")
    assert "elder" in phone.locator("body").get_attribute("class")
    largest, smallest = _largest_and_smallest_text(phone)
    assert smallest >= 18 and largest >= 30
    line_height = phone.evaluate("() => parseFloat(getComputedStyle(document.querySelector('.row')).lineHeight)")
    font_size = phone.evaluate("() => parseFloat(getComputedStyle(document.querySelector('.row')).fontSize)")
    assert line_height / font_size >= 1.3
    small_targets = phone.evaluate(
        """() => [...document.querySelectorAll('a, button, input')]
             .filter(el => el.offsetParent && !el.closest('p'))
             .map(el => [el.textContent.trim() || el.name, el.getBoundingClientRect()])
             .filter(([, r]) => r.height < 60 || r.width < 60)
             .map(([t, r]) => `${t} ${Math.round(r.width)}x${Math.round(r.height)}`)"""
    )
    assert small_targets == []
    shot(phone, "department-elder")
    phone.goto(f"{site}/")
    largest, smallest = _largest_and_smallest_text(phone)
    assert smallest >= 18 and largest >= 30
    shot(phone, "home-elder")
    # Remembered across pages and reloads (a cookie for a year).
    phone.reload()
    assert "elder" in phone.locator("body").get_attribute("class")
