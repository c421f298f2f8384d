"""The public figures and the coordinators' reports in headless Chromium, on a phone's screen
and a desktop's; screenshots under test-artifacts/screenshots/."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from hotline.config import Settings
from hotline.public_stats import month_start, publication
from storage.db import unit_of_work
from storage.models import Question, utcnow
from tests.browser.conftest import PHONE, NewContext, log_in, shot
from tests.support import runtime
from tests.workspace_support import add_user


@pytest.fixture
def figures(live_app: Flask) -> None:
    """Last month (the latest one published): 30 questions from Almaty, 20 from Astana, 4
    from Abai, all called back."""
    as_of, _next = publication(utcnow(), Settings().recording_catchup_hours)
    start = month_start((as_of - timedelta(days=1)).date()) + timedelta(minutes=1)
    with unit_of_work(runtime(live_app).sessions) as db:
        for region, topic, count in (("almaty", "pension", 30), ("astana", "disability", 20),
                                     ("abai", "documents", 4)):
            for i in range(count):
                db.add(Question(channel="voice", language="kk", topic=topic, region=region,
                                created_at=start, priority_at=start, status="closed",
                                close_reason="resolved",
                                first_callback_at=start + timedelta(hours=2 + i % 5),
                                closed_at=start + timedelta(hours=8)))


@pytest.mark.parametrize(("language", "heading"), [("kk", "Жедел желі сандармен"),
                                                   ("ru", "Горячая линия в цифрах")])
def test_the_public_page_on_a_phone(new_context: NewContext, figures: None, language: str,
                                    heading: str) -> None:
    context = new_context(viewport=PHONE)
    page = context.new_page()
    response = page.goto(f"/public/{language}")
    assert response is not None and response.status == 200
    assert page.locator("h1").inner_text() == heading
    assert page.locator("html").get_attribute("lang") == language
    assert page.locator("#received").inner_text() == "54"
    # Abai's 4 questions are hidden, and Astana's with them (else 54 - 30 would tell).
    hidden = {"kk": "жасырылды", "ru": "скрыто"}[language]
    assert page.locator("td span.suppressed", has_text=hidden).count() >= 2
    chart = page.locator("svg.chart").first
    box = chart.bounding_box()
    assert box is not None and 0 < box["width"] <= PHONE["width"]
    # Nothing wider than the phone's screen, and no cookie was needed or set.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert context.cookies() == []
    shot(page, f"20-public-{language}-phone")


def test_the_public_page_on_a_desktop_switches_language(new_context: NewContext,
                                                        figures: None) -> None:
    page = new_context().new_page()
    page.goto("/public/kk")
    page.click("nav.languages a[hreflang=ru]")
    page.wait_for_url("**/public/ru")
    assert page.locator("h1").inner_text() == "Горячая линия в цифрах"
    shot(page, "21-public-ru-desktop")
    stats = page.goto("/public/stats.json")
    assert stats is not None and stats.json()["totals"]["received"]["value"] == 54


def test_a_coordinator_reads_the_reports(new_context: NewContext, live_app: Flask,
                                         figures: None) -> None:
    add_user(live_app, "dana@example.kz", role="coordinator", name="Dana Coordinator")
    page = log_in(new_context(), "dana@example.kz")
    page.click("nav.pages a[href='/reports']")
    page.wait_for_url("**/reports")
    assert page.locator("h1").inner_text() == "Reports"
    assert page.locator("section#regions svg.chart").is_visible()
    shot(page, "22-reports-coordinator")
    with page.expect_download() as download:
        page.click("section#weeks a.csv")
    assert download.value.suggested_filename.startswith("hotline-weeks-")
    small = log_in(new_context(viewport=PHONE), "dana@example.kz")
    small.goto("/reports")
    assert small.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(small, "22-reports-phone")
    # The topic list's Kazakh and Russian names are longer: still no sideways scrolling.
    for language in ("kk", "ru"):
        small.goto(f"/reports?lang={language}")
        assert small.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], language
    shot(small, "22-reports-phone-ru")
