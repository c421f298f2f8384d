"""The public figures: small counts suppressed at 4 and shown at 5 and 6, the same figures in
HTML and JSON, Kazakh and Russian, no login and no cookie."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from werkzeug.test import TestResponse

from hotline import public_stats
from hotline.config import LOCAL_TIME, Settings
from hotline.public_stats import (
    FEW,
    HIDDEN,
    MIN_COUNT,
    Figure,
    Row,
    count_figure,
    derived_figure,
    last_months,
    protect,
    publication,
)
from storage.models import PublicSnapshot, Question, utcnow
from storage.reports import QuestionFacts
from tests.support import beside_held_writer_queue, runtime
from tests.workspace_support import Browser, Db, page


@pytest.mark.parametrize(("count", "shown"), [(0, Figure(0)), (1, HIDDEN), (4, HIDDEN),
                                              (5, Figure(5)), (6, Figure(6))])
def test_counts_below_five_are_suppressed(count: int, shown: Figure) -> None:
    assert count_figure(count) == shown


@pytest.mark.parametrize(("based_on", "shown"), [(0, FEW), (1, FEW), (4, FEW),
                                                 (5, Figure(2.5)), (6, Figure(2.5))])
def test_figures_from_fewer_than_five_questions_are_suppressed(based_on: int,
                                                               shown: Figure) -> None:
    """None (0) reads as 1 to 4 do: told apart, a median's "few" would tell that a row's
    callbacks were from 1 to 4."""
    assert derived_figure(2.5 if based_on else None, based_on) == shown


def test_a_lone_suppressed_cell_takes_the_next_smallest_with_it() -> None:
    """The cell hidden for another's sake (10 here) reads as the small one does: told apart,
    the small one could be worked out from the total."""
    assert protect([3, 12, 10]) == [HIDDEN, Figure(12), HIDDEN]
    # Two small cells hide each other; zeros are about nobody and stay.
    assert protect([3, 4, 10, 0]) == [HIDDEN, HIDDEN, Figure(10), Figure(0)]
    assert protect([5, 6, 0]) == [Figure(5), Figure(6), Figure(0)]


def test_hidden_cells_together_hold_at_least_five() -> None:
    # 1 + 1 hidden beside a published 50 and a total of 52: each would be known to be 1.
    assert protect([1, 1, 50]) == [HIDDEN, HIDDEN, HIDDEN]
    assert protect([1, 1, 1, 40, 60]) == [HIDDEN, HIDDEN, HIDDEN, HIDDEN, Figure(60)]
    # Two small cells that together reach five are enough.
    assert protect([2, 3, 50]) == [HIDDEN, HIDDEN, Figure(50)]
    # Nothing left to hide: the small cells stay hidden, zeros stay published.
    assert protect([1, 0, 0]) == [HIDDEN, Figure(0), Figure(0)]


KAZAKH_MONTHS = ("қаңтар", "ақпан", "наурыз", "сәуір", "мамыр", "маусым", "шілде", "тамыз",
                 "қыркүйек", "қазан", "қараша", "желтоқсан")
RUSSIAN_MONTHS = ("январь", "февраль", "март", "апрель", "май", "июнь", "июль", "август",
                  "сентябрь", "октябрь", "ноябрь", "декабрь")
ENGLISH_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
                  "September", "October", "November", "December")


@pytest.fixture(autouse=True)
def figures_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request computes the figures (test_the_figures_are_computed_once_a_minute checks
    that the app keeps them)."""
    monkeypatch.setattr(public_stats, "STATS_SECONDS", 0.0)


def test_the_figures_are_computed_once_a_minute(app: Flask, questions_in_regions: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Anyone may ask for the figures as often as they like: the app reads them once a minute
    (the first time in a month it computes them from every question of twelve months)."""
    monkeypatch.setattr(public_stats, "STATS_SECONDS", 60.0)
    reads = []
    kept = public_stats.figures.public_snapshot
    monkeypatch.setattr(public_stats.figures, "public_snapshot",
                        lambda *args: reads.append(args[1]) or kept(*args))
    client = app.test_client()
    questions_in_regions(5)
    for path in ("/public/stats.json", "/public/ru", "/public/kk", "/public/stats.json"):
        assert client.get(path).status_code == 200
    assert len(reads) == 1
    monkeypatch.setattr(public_stats, "STATS_SECONDS", 0.0)  # the minute is over
    client.get("/public/stats.json")
    assert len(reads) == 2


def test_a_month_is_computed_once_and_kept(app: Flask, db: Db, questions_in_regions: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The first computation after a month ended is kept in the database and served until
    the next one ends: a question found late, or a region tagged later, changes nothing (the
    same document, in every web process, after a restart too); the next month's figures
    count them."""
    client = app.test_client()
    questions_in_regions(5)
    first = client.get("/public/stats.json").get_json()
    assert by_region(first)["abai"]["received"] == {"value": 5, "suppressed": False}
    questions_in_regions(6)  # 11 in Abai now (found late: last month's)
    with db() as session:
        [kept] = session.scalars(select(PublicSnapshot)).all()
        assert kept.month == month_start().strftime("%Y-%m")
        moved = session.scalars(select(Question).where(Question.region == "astana")).first()
        assert moved is not None
        moved.region = "abai"  # a consultant tags an old question
    assert client.get("/public/stats.json").get_json() == first
    next_month = month_start() + timedelta(days=64)  # a moment in the month after this one
    monkeypatch.setattr(public_stats, "utcnow", lambda: next_month)
    later = client.get("/public/stats.json").get_json()
    assert by_region(later)["abai"]["received"] == {"value": 12, "suppressed": False}
    with db() as session:
        assert len(session.scalars(select(PublicSnapshot)).all()) == 2


def month_start() -> datetime:
    """The first moment, in Almaty, of the latest month published now (the last completed
    one, or the one before it in the first hours of a month: public_stats.publication)."""
    as_of, _next = publication(utcnow(), Settings().recording_catchup_hours)
    return public_stats.month_start((as_of - timedelta(days=1)).date())


@pytest.fixture
def questions_in_regions(db: Db) -> Any:
    """Add questions last month: `count` in Abai, 20 in Astana, 30 in Almaty, all answered."""

    def add(count: int) -> None:
        start = month_start() + timedelta(minutes=1)
        with db() as session:
            for region, n in (("abai", count), ("astana", 20), ("almaty", 30)):
                for i in range(n):
                    # Abai's callbacks come 1, 2, 3 ... hours after the question.
                    hours = i + 1 if region == "abai" else 10
                    session.add(Question(
                        channel="voice", language="kk", topic="pension", region=region,
                        created_at=start, priority_at=start, status="closed",
                        close_reason="resolved", closed_at=start + timedelta(hours=hours + 1),
                        first_callback_at=start + timedelta(hours=hours)))

    return add


def test_only_completed_months_are_published_as_they_ended(app: Flask, db: Db,
                                                          questions_in_regions: Any) -> None:
    """A call today, or a callback today to last month's question, changes nothing until the
    month is over: figures published afresh would differ by that one call, and tell its region,
    topic and whether it was answered to whoever knew who called when."""
    questions_in_regions(5)
    last_month = month_start()
    this_month = (last_month + timedelta(days=32)).replace(day=1)
    with db() as session:
        waiting = Question(channel="voice", language="kk", topic="land", region="abai",
                           created_at=last_month + timedelta(days=3), status="waiting",
                           priority_at=last_month + timedelta(days=3))
        session.add(waiting)
    client = app.test_client()
    before = client.get("/public/stats.json").get_json()
    assert before["as_of"] == this_month.isoformat()
    # A day and some hours after the month ends, so that late recordings are in.
    next_update = publication(utcnow(), Settings().recording_catchup_hours)[1]
    assert next_update - (this_month + timedelta(days=32)).replace(day=1) == timedelta(hours=30)
    assert before["next_update"] == next_update.date().isoformat()
    assert before["period"]["to_month"] == last_month.strftime("%Y-%m")
    assert by_region(before)["abai"]["received"] == {"value": 6, "suppressed": False}
    assert by_region(before)["abai"]["answered"]["suppressed"] is True  # 1 not answered
    with db() as session:
        now = utcnow()
        for region in ("abai", "abai", "astana", "shymkent"):  # today's calls
            session.add(Question(channel="voice", language="ru", topic="violence",
                                 region=region, created_at=now, priority_at=now))
        called = session.get(Question, waiting.id)
        assert called is not None
        called.first_callback_at, called.status = now, "closed"
        called.close_reason, called.closed_at = "resolved", now
        called.region = "astana"  # tagged during today's callback
    assert client.get("/public/stats.json").get_json() == before
    text_of = {"ru": "Показаны только завершённые месяцы",
               "kk": "Тек аяқталған айлар", "en": "Only completed months are shown"}
    for language, words in text_of.items():
        text = client.get(f"/public/{language}").get_data(as_text=True)
        assert words in text
        # The date's own full stop (Russian "г.") and the sentence's are one.
        updates = re.search(r'<p class="hint" id="updates">([^<]*)</p>', text)
        assert updates and updates.group(1).endswith(".") and ".." not in updates.group(1)
    russian = client.get("/public/ru").get_data(as_text=True)
    assert f"{next_update.astimezone(LOCAL_TIME).year}\u202fг.</p>" in russian


def test_a_month_is_published_as_it_stood_at_its_end() -> None:
    """compute(): what came after as_of (questions, callbacks, SMS answers, closes) is left
    out; what came before stays."""
    as_of = datetime(2026, 11, 1, tzinfo=LOCAL_TIME)
    before, after = as_of - timedelta(hours=5), as_of + timedelta(hours=1)

    def fact(n: int, created: datetime, callback: datetime | None = None,
             sms: datetime | None = None, resolved: datetime | None = None) -> QuestionFacts:
        return QuestionFacts(id=n, created_at=created, channel="voice", language="kk",
                             topic="pension", region="abai", status="closed",
                             closed_at=resolved, close_reason="resolved" if resolved else None,
                             first_callback_at=callback, first_sms_answer_at=sms)

    facts = ([fact(i, before, callback=before + timedelta(hours=1)) for i in range(6)]
             + [fact(10 + i, before, callback=after) for i in range(6)]
             + [fact(20 + i, before, sms=after) for i in range(6)]
             + [fact(30 + i, before, resolved=after) for i in range(6)]
             + [fact(40 + i, after, callback=after) for i in range(6)])
    stats = public_stats.compute(facts, ["2026-10"], computed_at=after, as_of=as_of)
    assert (stats.total.received, stats.total.answered) == (Figure(24), Figure(6))
    assert stats.total.median_hours == Figure(1.0)
    assert stats.as_of == as_of


def test_the_figures_do_not_wait_for_the_writers(app: Flask, questions_in_regions: Any) -> None:
    """The figures are read in a read-only transaction: on SQLite reading them neither queues
    behind a writer nor holds the webhooks' writes up. (The month's first computation writes
    its result once: that one takes its turn with the writers.)"""
    url = runtime(app).settings.database_url
    if not url.startswith("sqlite:"):
        pytest.skip("the writer queue is SQLite's")
    questions_in_regions(5)
    client = app.test_client()
    assert client.get("/public/stats.json").status_code == 200  # computed and kept
    response = beside_held_writer_queue(url, lambda: client.get("/public/stats.json"))
    assert response.status_code == 200
    assert by_region(response.get_json())["abai"]["received"] == {"value": 5,
                                                                  "suppressed": False}


def by_region(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["region"]: row for row in stats["by_region"]}


@pytest.mark.parametrize(("count", "received", "median"), [
    (4, None, None),
    (5, 5, 3.0),
    (6, 6, 3.5),
])
def test_the_json_suppresses_a_region_of_four(app: Flask, questions_in_regions: Any,
                                              count: int, received: int | None,
                                              median: float | None) -> None:
    questions_in_regions(count)
    response = app.test_client().get("/public/stats.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert "Set-Cookie" not in response.headers
    stats = response.get_json()
    abai = by_region(stats)["abai"]
    small = {"reason": "hidden"} if received is None else {}
    assert abai["received"] == {"value": received, "suppressed": received is None, **small}
    assert abai["answered"] == {"value": received, "suppressed": received is None, **small}
    # A median beside a hidden answered count is hidden with it (reason hidden, not few: a
    # median shown would tell that the row had 5 callbacks or more).
    assert abai["median_hours_to_callback"] == {"value": median, "suppressed": median is None,
                                                **small}
    assert abai["title"] == {"kk": "Абай облысы", "ru": "область Абай", "en": "Abai Region"}
    # At 4 Abai could be worked out from the total; the next smallest region is hidden too.
    astana = by_region(stats)["astana"]["received"]
    # It holds 20, and reads as Abai's 4 does: told apart, Abai's could be worked out.
    assert astana == ({"value": None, "suppressed": True, "reason": "hidden"}
                      if count == 4 else {"value": 20, "suppressed": False})
    # Its answered and median with it.
    assert by_region(stats)["astana"]["median_hours_to_callback"]["suppressed"] is (count == 4)
    assert by_region(stats)["almaty"]["received"] == {"value": 30, "suppressed": False}
    # Largest first; hidden ones last in code order, so their place says nothing of their size.
    assert [row["region"] for row in stats["by_region"]] == (
        ["almaty", "abai", "astana"] if count == 4 else ["almaty", "astana", "abai"])
    assert stats["totals"]["received"] == {"value": 50 + count, "suppressed": False}
    # Months before the first question are left out: here only this month.
    [this_month] = stats["by_month"]
    assert this_month["month"] == month_start().strftime("%Y-%m")
    assert this_month["received"]["value"] == 50 + count
    assert stats["period"]["from_month"] == stats["period"]["to_month"] == this_month["month"]
    assert stats["by_topic"][0]["topic"] == "pension"
    assert stats["by_topic"][0]["title"]["ru"] == "Пенсия"
    # English, which the phone's content does not speak: tree.yaml's title, not the code.
    assert stats["by_topic"][0]["title"]["en"] == "Pensions"
    assert stats["min_count"] == 5


def test_the_page_shows_less_than_five_in_kazakh_and_russian(app: Flask,
                                                             questions_in_regions: Any) -> None:
    questions_in_regions(4)
    visitor = Browser(app, language=None)
    for path, lang, heading, hidden in [
            ("/public/kk", "kk", "Жедел желі сандармен", "жасырылды"),
            ("/public/ru", "ru", "Горячая линия в цифрах", "скрыто"),
            ("/public/en", "en", "The hotline in figures", "hidden")]:
        response = visitor.get(path)
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
        assert response.headers["Cache-Control"] == "public, max-age=600"
        shown = page(response)
        assert (shown.lang, shown.headings) == (lang, [heading])
        # Regions by size, the suppressed ones last: Almaty (city) 30, then Abai and Astana.
        regions = [row for row in shown.rows if len(row) == 4][-3:]
        # Abai's 4 and Astana's 20 (hidden so that Abai's cannot be worked out from the
        # total) read alike: "<5" would be false for Astana, and telling them apart would
        # give Abai's away.
        assert [row[1] for row in regions] == ["30", hidden, hidden], regions
        # No "<5" ("under 5 hours" under "hours"); the medians of the hidden rows are hidden
        # with them (a median tells that a row had 5 callbacks or more).
        assert "<5" not in str(shown.rows)
        assert [row[3] for row in regions] == ["10.0", hidden, hidden], regions
        # Months by name in the page's language, not as 2026-03.
        this_month = month_start()
        names = {"kk": KAZAKH_MONTHS, "ru": RUSSIAN_MONTHS, "en": ENGLISH_MONTHS}[lang]
        name = names[this_month.month - 1]
        # Kazakh: the year first ("2026 ж. наурыз").
        label = f"{this_month.year} ж. {name}" if lang == "kk" else f"{name} {this_month.year}"
        assert [label] in [row[:1] for row in shown.rows]
        assert "<svg" in response.get_data(as_text=True)


def test_the_page_follows_the_browser_language_without_cookies(app: Flask) -> None:
    visitor = Browser(app, language="ru-RU,ru;q=0.9")
    response = visitor.get("/public")
    assert page(response).lang == "ru"
    assert "Accept-Language" in response.headers["Vary"]
    assert "Set-Cookie" not in response.headers
    assert page(Browser(app, language="de").get("/public")).lang == "kk"


def test_an_address_that_is_no_public_page_says_so_in_the_visitors_language(
        app: Flask) -> None:
    """Not Werkzeug's English page, and not the workspace's (which sets a cookie): the
    language of the path, else the browser's; no cookie, as the public pages."""
    for path, accept, status, lang, heading in (
            ("/public/de", "ru-RU,ru;q=0.9", 404, "ru", "Не найдено"),
            ("/public/de", None, 404, "kk", "Табылмады"),
            ("/public/en/more", "ru", 404, "en", "Not found")):
        response = Browser(app, language=accept).get(path)
        assert response.status_code == status, path
        assert (page(response).lang, page(response).headings) == (lang, [heading]), path
        assert "Set-Cookie" not in response.headers
        assert response.headers["Content-Language"] == lang
        assert f'href="/public/{lang}"' in response.get_data(as_text=True)
    posted = Browser(app, language="ru").client.post("/public/kk")
    assert posted.status_code == 405 and posted.headers["Allow"].count("GET") == 1
    assert page(posted).headings == ["Бұлай ашуға болмайды"]


def test_public_figures_need_no_login_and_can_be_revalidated(app: Flask,
                                                             coordinator: str) -> None:
    client = app.test_client()
    first = client.get("/public/stats.json")
    assert first.status_code == 200
    again = client.get("/public/stats.json", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    # A logged-in coordinator's response carries their session cookie: never shared.
    boss = Browser(app)
    boss.login(coordinator)
    assert boss.get("/public/ru").headers["Cache-Control"] == "private, max-age=600"


def test_figures_that_cannot_be_computed_are_explained(app: Flask, db: Db) -> None:
    """The database does not answer the figures' query (here: its table is gone): the page
    says so in its language, the JSON says so too, 503 with Retry-After; not Werkzeug's page."""
    with db() as session:  # the figures are read from here once computed
        session.execute(text("ALTER TABLE public_snapshots RENAME TO snapshots_away"))
    client = app.test_client()
    for path, language, words in (
            ("/public/ru", "ru", "Сейчас цифры показать не удаётся."),
            ("/public/kk", "kk", "Сандарды қазір көрсету мүмкін емес."),
            ("/public/en", "en", "The figures cannot be shown just now.")):
        page = client.get(path)
        assert (page.status_code, page.headers["Retry-After"]) == (503, "300")
        assert page.headers["Content-Language"] == language
        assert words in page.get_data(as_text=True)
    answer = client.get("/public/stats.json")
    assert answer.status_code == 503 and answer.mimetype == "application/json"
    assert answer.get_json() == {
        "error": "The figures cannot be computed just now; try again in a few minutes."}


def stale_notice(response: TestResponse) -> str | None:
    """The public page's notice that its figures could not be computed afresh."""
    found = re.search(r'<p class="warning" id="stale" role="status">(.*?)</p>',
                      response.get_data(as_text=True), re.DOTALL)
    return html.unescape(" ".join(found.group(1).split())) if found else None


def test_through_an_outage_the_last_figures_stay(app: Flask, db: Db,
                                                 questions_in_regions: Any) -> None:
    """The last figures stay, marked stale with the time they were computed, in every
    language; caches keep them a minute, not ten; the next figures computed drop the mark."""
    questions_in_regions(5)
    client = app.test_client()
    before = client.get("/public/stats.json").get_json()
    assert before["stale"] is False and "computed_at" not in before
    assert stale_notice(client.get("/public/ru")) is None
    with db() as session:  # the figures are read from here once computed
        session.execute(text("ALTER TABLE public_snapshots RENAME TO snapshots_away"))
    computed = utcnow()
    during = client.get("/public/stats.json")  # computed again (STATS_SECONDS 0): fails
    assert during.status_code == 200
    assert during.headers["Cache-Control"] == "public, max-age=60"
    figures = during.get_json()
    assert figures.pop("stale") is True
    assert abs(datetime.fromisoformat(figures.pop("computed_at")) - computed) < timedelta(
        minutes=1)
    assert figures == {key: value for key, value in before.items() if key != "stale"}
    moment = datetime.fromisoformat(during.get_json()["computed_at"]).astimezone(LOCAL_TIME)
    shown = moment.strftime("%d.%m.%Y %H:%M")
    for path, words in (
            ("/public/ru", f"Сейчас цифры обновить не удаётся: показаны данные на {shown} по "
                           "времени Алматы."),
            ("/public/kk", f"Сандарды қазір жаңарту мүмкін емес: Алматы уақытымен {shown} "
                           "күйіндегі деректер көрсетілген."),
            ("/public/en", "The figures cannot be updated just now: these are those of "
                           f"{shown}, Almaty time.")):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "public, max-age=60"
        assert stale_notice(response) == words
    with db() as session:
        session.execute(text("ALTER TABLE snapshots_away RENAME TO public_snapshots"))
    after = client.get("/public/stats.json")
    assert after.headers["Cache-Control"] == "public, max-age=600"
    assert after.get_json() == before
    assert stale_notice(client.get("/public/ru")) is None


# Rows together: what a reader can work out from the shown cells and the totals. --------------

NOW = datetime(2026, 10, 15, 12, 0, tzinfo=LOCAL_TIME)


def region_facts(rows: dict[str, tuple[int, int]]) -> list[Any]:
    """Questions of this month: region -> (received, answered); the answered ones were called
    back 2 hours after they came, so that each region's callbacks are its answered."""
    facts = []
    for region, (received, answered) in rows.items():
        for i in range(received):
            callback = NOW + timedelta(hours=2) if i < answered else None
            facts.append(QuestionFacts(
                id=len(facts) + 1, created_at=NOW, channel="voice", language="kk",
                topic="pension", region=region, status="closed",
                closed_at=NOW + timedelta(hours=3), close_reason=None,
                first_callback_at=callback))
    return facts


def published(rows: dict[str, tuple[int, int]]) -> tuple[Row, dict[str | None, Row]]:
    stats = public_stats.compute(region_facts(rows), last_months(NOW.date(), 12), NOW)
    return stats.total, {row.key: row for row in stats.regions}


def undetermined(total: Row, rows: Sequence[Row]) -> list[str]:
    """The hidden cells of a breakdown (and of its totals) whose value a reader can work out
    exactly from what is shown: the totals are the sums of the rows, 0 <= answered <=
    received, a hidden received is at least 1 (zeros are shown) and a hidden total received
    at most 4 (totals have no protectors), a median shown beside a row says it had at least
    MIN_COUNT callbacks (so answered at least that), "few" at least one. Exact: every
    completion of the hidden received cells is tried, and for each the range of every hidden
    answered cell (bounds and one sum) is taken. Returns the determined cells, by name."""
    def known(figure: Figure) -> int | None:
        return None if figure.suppressed else int(figure.value or 0)

    def answered_floor(row: Row) -> int:
        if not row.median_hours.suppressed and row.median_hours.value is not None:
            return MIN_COUNT
        return 1 if row.median_hours.reason == "few" else 0

    received = [known(r.received) for r in rows]
    answered = [known(r.answered) for r in rows]
    floors = [max(answered_floor(r), answered[i] or 0) for i, r in enumerate(rows)]
    hidden_r = [i for i, value in enumerate(received) if value is None]
    hidden_a = [i for i, value in enumerate(answered) if value is None]
    seen: dict[str, set[int]] = {f"received[{rows[i].key}]": set() for i in hidden_r}
    seen.update({f"answered[{rows[i].key}]": set() for i in hidden_a})
    total_r, total_a = known(total.received), known(total.answered)
    if total_r is None:
        seen["received[total]"] = set()
    if total_a is None:
        seen["answered[total]"] = set()

    def compositions(amount: int, floors: list[int]) -> Iterator[list[int]]:
        if not floors:
            if amount == 0:
                yield []
            return
        for first in range(floors[0], amount - sum(floors[1:]) + 1):
            for rest in compositions(amount - first, floors[1:]):
                yield [first, *rest]

    shown_r = sum(value or 0 for value in received)
    for whole in ([total_r] if total_r is not None else range(1, MIN_COUNT)):
        r_floors = [max(1, floors[i]) for i in hidden_r]
        for parts in compositions(whole - shown_r, r_floors):
            full = list(received)
            for i, value in zip(hidden_r, parts, strict=True):
                full[i] = value
                seen[f"received[{rows[i].key}]"].add(value)
            if total_r is None:
                seen["received[total]"].add(whole)
            lows = {i: floors[i] for i in hidden_a}
            highs = {i: int(full[i] or 0) for i in hidden_a}
            if any(lows[i] > highs[i] for i in hidden_a):
                continue
            shown_a = sum(value or 0 for value in answered)
            if total_a is None:
                seen["answered[total]"].update(
                    {shown_a + sum(lows.values()), shown_a + sum(highs.values())})
                for i in hidden_a:
                    seen[f"answered[{rows[i].key}]"].update({lows[i], highs[i]})
                continue
            rest = total_a - shown_a
            if not sum(lows.values()) <= rest <= sum(highs.values()):
                continue
            for i in hidden_a:
                others_low = sum(lows.values()) - lows[i]
                others_high = sum(highs.values()) - highs[i]
                seen[f"answered[{rows[i].key}]"].update(
                    {max(lows[i], rest - others_high), min(highs[i], rest - others_low)})
            if all(len(values) > 1 for values in seen.values()):
                return []
    zero_answered = total_a == 0  # "nobody was answered" is about everybody: shown
    return sorted(name for name, values in seen.items() if len(values) <= 1
                  and not (zero_answered and name.startswith("answered")))


def test_a_hidden_received_takes_its_answered_and_median_with_it() -> None:
    """Almaty 50/45, Abai 1/0, Astana 7/7: published as before, Abai's 0 answered and
    Astana's 7 (with a median) told that Abai + Astana = 8 with Astana at least 7: Abai's one
    resident, and that nobody called them back."""
    total, regions = published({"almaty": (50, 45), "abai": (1, 0), "astana": (7, 7)})
    assert (total.received, total.answered) == (Figure(58), Figure(52))
    for region in ("abai", "astana"):
        assert regions[region].received == HIDDEN
        assert regions[region].answered == HIDDEN
        assert regions[region].median_hours == HIDDEN
    assert regions["almaty"].received == Figure(50)
    assert undetermined(total, list(regions.values())) == []


def test_a_median_tells_nothing_of_a_hidden_answered() -> None:
    """Almaty 50/45, Abai 6/1, Astana 10/5: both small answered cells were hidden, but a median
    for Astana alone said it had 5 callbacks or more, so Abai's answered was 6 - 5 = 1."""
    total, regions = published({"almaty": (50, 45), "abai": (6, 1), "astana": (10, 5)})
    assert [regions[r].received for r in ("almaty", "abai", "astana")] == [
        Figure(50), Figure(6), Figure(10)]
    assert regions["abai"].answered == regions["astana"].answered == HIDDEN
    assert regions["abai"].median_hours == regions["astana"].median_hours == HIDDEN
    assert regions["almaty"].answered == Figure(45)
    assert regions["almaty"].median_hours == Figure(2.0)
    assert undetermined(total, list(regions.values())) == []


def test_a_small_unanswered_is_hidden_too() -> None:
    """Received less answered is published as well: 7 received and 6 answered would tell of
    the one resident nobody called back."""
    total, regions = published({"almaty": (50, 45), "abai": (7, 6), "astana": (20, 10)})
    assert regions["abai"].received == Figure(7)
    assert regions["abai"].answered == HIDDEN
    assert regions["abai"].median_hours == HIDDEN
    # Hidden with it: enough that the hidden ones hold 5 or more unanswered together.
    assert regions["astana"].answered == HIDDEN
    assert undetermined(total, list(regions.values())) == []
    # The totals too: 58 received and 55 answered would tell of 3 not called back.
    total, _regions = published({"almaty": (50, 47), "astana": (8, 8)})
    assert (total.received, total.answered, total.median_hours) == (Figure(58), HIDDEN, HIDDEN)


def test_the_checker_finds_what_the_old_rules_gave_away() -> None:
    """undetermined() itself: the first example as the old rules published it."""
    old_rows = [Row("almaty", Figure(50), Figure(45), Figure(2.0)),
                Row("abai", HIDDEN, Figure(0), Figure(None)),
                Row("astana", HIDDEN, Figure(7), Figure(2.0))]
    assert undetermined(Row(None, Figure(58), Figure(52), Figure(2.0)), old_rows) == [
        "received[abai]", "received[astana]"]


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 9).flatmap(
    lambda received: st.tuples(st.just(received), st.integers(0, received))),
    min_size=1, max_size=4))
def test_no_hidden_cell_can_be_worked_out(cells: list[tuple[int, int]]) -> None:
    """Small random breakdowns: every hidden cell has at least two values consistent with the
    shown ones and the totals."""
    rows = {f"r{i}": cell for i, cell in enumerate(cells)}
    total, regions = published(rows)
    if total.received.suppressed:
        # Fewer than 5 in all: no breakdown (four regions listed, each hidden, with a total of
        # at most 4, would be four questions of one each).
        assert regions == {}
        assert total.answered == total.median_hours == HIDDEN
        return
    # Regions with no question are not listed; the others are all there.
    assert set(regions) == {key for key, (received, _a) in rows.items() if received}
    assert undetermined(total, list(regions.values())) == []
    for row in [total, *regions.values()]:
        if row.received.suppressed:
            assert row.answered.suppressed
        if row.answered.suppressed:
            assert row.median_hours.suppressed


@pytest.mark.parametrize(("rows", "hidden_regions", "almaty_answered"), [
    # Abai and Astana together hold 1 unanswered: Almaty's answered is hidden with theirs,
    # else 52 - 45 = 7 answered of their 8 would tell of one resident not called back.
    ({"almaty": (50, 45), "abai": (1, 0), "astana": (7, 7)}, {"abai", "astana"}, None),
    ({"almaty": (50, 45), "abai": (6, 1), "astana": (10, 5)}, set(), 45),
])
def test_the_json_gives_neither_example_away(app: Flask, db: Db,
                                             rows: dict[str, tuple[int, int]],
                                             hidden_regions: set[str],
                                             almaty_answered: int | None) -> None:
    """The reviewer's two examples, stored and read back as /public/stats.json."""
    start = month_start() + timedelta(minutes=1)
    with db() as session:
        for region, (received, answered) in rows.items():
            for i in range(received):
                called = i < answered
                session.add(Question(
                    channel="voice", language="kk", topic="pension", region=region,
                    created_at=start, priority_at=start,
                    status="closed" if called else "waiting",
                    close_reason="resolved" if called else None,
                    closed_at=start + timedelta(hours=3) if called else None,
                    first_callback_at=start + timedelta(hours=2) if called else None))
    stats = app.test_client().get("/public/stats.json").get_json()
    hidden = {"value": None, "suppressed": True, "reason": "hidden"}
    regions = by_region(stats)
    for region in ("abai", "astana"):
        if region in hidden_regions:
            assert regions[region]["received"] == hidden
        else:
            assert regions[region]["received"]["value"] == rows[region][0]
        assert regions[region]["answered"] == hidden
        assert regions[region]["median_hours_to_callback"] == hidden
    assert regions["almaty"]["received"] == {"value": 50, "suppressed": False}
    if almaty_answered is None:
        assert regions["almaty"]["answered"] == hidden
        assert regions["almaty"]["median_hours_to_callback"] == hidden
    else:
        assert regions["almaty"]["answered"] == {"value": almaty_answered,
                                                 "suppressed": False}
        assert regions["almaty"]["median_hours_to_callback"] == {"value": 2.0,
                                                                 "suppressed": False}


def test_fewer_than_five_in_all_are_not_broken_down(app: Flask, db: Db) -> None:
    """With 4 questions in all, four regions listed, each hidden, would be one each."""
    start = month_start() + timedelta(minutes=1)
    with db() as session:
        for region in ("abai", "astana", "almaty", "shymkent"):
            session.add(Question(channel="voice", language="kk", topic="pension",
                                 region=region, created_at=start, priority_at=start))
    client = app.test_client()
    stats = client.get("/public/stats.json").get_json()
    hidden = {"value": None, "suppressed": True, "reason": "hidden"}
    assert stats["totals"] == {"received": hidden, "answered": hidden,
                               "median_hours_to_callback": hidden}
    assert stats["by_month"] == stats["by_region"] == stats["by_topic"] == []
    # Nor is the month of the first question told: the whole year.
    assert stats["period"]["to_month"] == month_start().strftime("%Y-%m")
    assert stats["period"]["from_month"] != stats["period"]["to_month"]
    assert "Всего меньше 5 вопросов" in client.get("/public/ru").get_data(as_text=True)


@pytest.mark.parametrize(("now", "published_through", "next_update"), [
    # Almaty is UTC+5. November ends at 2026-11-30 19:00 UTC; published 30 h later.
    (datetime(2026, 12, 2, 0, 59, tzinfo=UTC), "2026-10", datetime(2026, 12, 2, 6, 0)),
    (datetime(2026, 12, 2, 1, 0, tzinfo=UTC), "2026-11", datetime(2027, 1, 2, 6, 0)),
    (datetime(2026, 12, 31, 23, 0, tzinfo=UTC), "2026-11", datetime(2027, 1, 2, 6, 0)),
])
def test_a_month_is_published_when_its_late_recordings_are_in(
        now: datetime, published_through: str, next_update: datetime) -> None:
    """A recording Twilio's catch-up finds (up to HOTLINE_RECORDING_CATCHUP_HOURS late) keeps
    its call's time: the month is published after that, so such a call is in its month's first
    figures, not only in the next version of that row (which would differ by it alone)."""
    as_of, then = publication(now, catchup_hours=24)
    assert (as_of - timedelta(days=1)).strftime("%Y-%m") == published_through
    assert then == next_update.replace(tzinfo=LOCAL_TIME)


def test_a_demo_shows_this_month_so_far(make_app: Callable[[Settings], Flask],
                                        settings: Settings, db: Db) -> None:
    """`make run` (demo mode): the page shows today's questions, says it is a demo, keeps
    nothing; a real hotline (the other tests) shows completed months only."""
    app = make_app(settings.override(demo=True))
    now = utcnow()
    with db() as session:
        for i in range(6):
            session.add(Question(channel="voice", language="ru", topic="pension",
                                 region="abai", created_at=now - timedelta(minutes=i),
                                 priority_at=now))
    client = app.test_client()
    answer = client.get("/public/stats.json")
    assert answer.headers["Cache-Control"] == "public, max-age=60"  # a minute, as it says
    stats = answer.get_json()
    assert stats["totals"]["received"] == {"value": 6, "suppressed": False}
    assert stats["period"]["to_month"] == now.astimezone(LOCAL_TIME).strftime("%Y-%m")
    assert stats["next_update"] is None and stats["updates"].startswith("demo mode")
    for language, words in (("ru", "Демо-режим: показан и текущий месяц"),
                            ("kk", "Демо режимі: осы айдың"), ("en", "Demo mode: this month")):
        assert words in html.unescape(client.get(f"/public/{language}").get_data(as_text=True))
    with db() as session:
        assert session.scalars(select(PublicSnapshot)).all() == []


def period_sentence(response: TestResponse) -> str:
    """The sentence under the heading that says which months the figures are of."""
    found = re.search(r"</h1>\s*<p>(.*?)</p>", response.get_data(as_text=True), re.S)
    assert found is not None
    return " ".join(html.unescape(found.group(1)).split())


@pytest.mark.parametrize(("months", "sentences", "labels"), [
    # December 2026 and January 2027: two months, two years.
    (("2026-12", "2027-01"), {
        # After "с" the genitive (Babel's format form, MMMM); after "по" the accusative,
        # which is the nominative for a month (the stand-alone form, LLLL).
        "ru": "Вопросы, которые жители задали бесплатной юридической линии с декабря 2026 по "
              "январь 2027, и как быстро юристы перезванивали.",
        # The year first, the month in lower case, and the range with a dash (no case ending
        # on the month's name to get wrong).
        "kk": "2026 жылғы желтоқсан – 2027 жылғы қаңтар аралығында тұрғындар тегін заң "
              "желісіне қойған сұрақтар және заңгерлердің қаншалықты тез кері қоңырау шалғаны.",
        "en": "Questions residents asked the free legal hotline from December 2026 to January "
              "2027, and how quickly lawyers called back.",
    }, {"ru": ["декабрь 2026", "январь 2027"], "kk": ["2026 ж. желтоқсан", "2027 ж. қаңтар"],
        "en": ["December 2026", "January 2027"]}),
    # January 2027 alone: "from January 2027 to January 2027" said once.
    (("2027-01",), {
        "ru": "Вопросы, которые жители задали бесплатной юридической линии за январь 2027, и "
              "как быстро юристы перезванивали.",
        "kk": "2027 жылғы қаңтар айында тұрғындар тегін заң желісіне қойған сұрақтар және "
              "заңгерлердің қаншалықты тез кері қоңырау шалғаны.",
        "en": "Questions residents asked the free legal hotline in January 2027, and how "
              "quickly lawyers called back.",
    }, {"ru": ["январь 2027"], "kk": ["2027 ж. қаңтар"], "en": ["January 2027"]}),
])
def test_the_months_read_as_each_language_writes_them(
        app: Flask, db: Db, monkeypatch: pytest.MonkeyPatch, months: tuple[str, ...],
        sentences: dict[str, str], labels: dict[str, list[str]]) -> None:
    """The period in the sentence under the heading, and the months' table and chart: in
    Russian "с декабря 2026 по январь 2027" (not "с декабрь"); in Kazakh the year first and
    the month in lower case ("2026 жылғы желтоқсан", not "Желтоқсан 2026"); the JSON keeps
    YYYY-MM."""
    # February 10, 2027: the figures of the twelve months up to January 2027 are published.
    monkeypatch.setattr(public_stats, "utcnow", lambda: datetime(2027, 2, 10, 12, tzinfo=UTC))
    with db() as session:
        for month in months:
            year, number = (int(part) for part in month.split("-"))
            created = datetime(year, number, 5, 12, tzinfo=LOCAL_TIME)
            for _question in range(6):
                session.add(Question(channel="voice", language="kk", topic="pension",
                                     region="abai", created_at=created, priority_at=created,
                                     status="waiting"))
    client = app.test_client()
    stats = client.get("/public/stats.json").get_json()
    assert (stats["period"]["from_month"], stats["period"]["to_month"]) == (months[0],
                                                                           months[-1])
    assert [row["month"] for row in stats["by_month"]] == list(months)
    for language, sentence in sentences.items():
        response = client.get(f"/public/{language}")
        assert period_sentence(response) == sentence, language
        shown = page(response)
        # The months' table (its rows of four cells after the header; regions come next).
        month_rows = [row[0] for row in shown.rows if len(row) == 4][1:1 + len(months)]
        assert month_rows == labels[language], language
        source = response.get_data(as_text=True)
        for month, label in zip(months, labels[language], strict=True):
            assert f'<time datetime="{month}">{label}</time>' in source
            assert f'class="chart-label">{label}</text>' in source
