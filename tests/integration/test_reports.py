"""Reports for coordinators: figures checked against a dataset with known answers, filters,
CSV downloads that a CSV reader reads back, and who may open the page."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from hotline.config import LOCAL_TIME, Settings
from hotline.reports_page import TABLE_NAMES, ZERO_WEEKS
from storage import reports
from storage.models import (
    AuditEvent,
    Call,
    CallbackAttempt,
    Question,
    SmsMessage,
    User,
)
from storage.workdays import WorkCalendar
from tests.support import beside_held_writer_queue
from tests.workspace_support import Browser, Db, page

H = timedelta(hours=1)
NOW = datetime(2026, 3, 20, 6, 0, tzinfo=UTC)  # Friday 20 March 2026, 11:00 in Almaty
MARCH = reports.Filters(since=datetime(2026, 3, 1, tzinfo=LOCAL_TIME),
                        until=datetime(2026, 4, 1, tzinfo=LOCAL_TIME))


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment in March 2026, UTC."""
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def build_dataset(session: Session) -> dict[str, int]:
    """Nine questions, two consultants and six calls, with the figures worked out by hand.

    Target: 3 working days, Monday to Friday (WorkCalendar()); with Kazakhstan's holidays
    (WorkCalendar("KZ")) Monday 9 March is a day off (Women's Day, 8 March, was a Sunday), and
    q4 is in time. Almaty is UTC+5. Week 2026-W10 is 2-8 March, W11 9-15, W12 16-22.

    q1  Mon 2 Mar 05:00  voice ru pension    almaty   called +2 h, resolved +4 h        in time
    q2  Mon 2 Mar 10:00  voice kk pension    almaty   called +10 h, resolved +30 h      in time
    q3  Tue 3 Mar 04:00  sms   kk disability zhambyl  no call, resolved by SMS +20 h    in time
    q4  Wed 4 Mar 06:00  voice ru social     (none)   called +140 h (deadline: end of Mon
                         9 Mar local = 19:00 UTC; +140 h is Tue 02:00 UTC), no answer     late
                         (KZ: deadline end of Tue 10 Mar)                              in time
    q5  Fri 6 Mar 12:00  voice ru pension    almaty   waiting, deadline Wed 11 Mar passed   late
    q6  Sun 8 Mar 20:00  voice kk documents  zhambyl  (Mon 01:00 local: W11) closed silence,
                         no call                                                  not counted
    q7  Tue 10 Mar       voice ru pension    almaty   a test call                 counts nowhere
    q8  Wed 18 Mar 05:00 voice ru pension    almaty   claimed by B, deadline Mon 23 Mar: not due
    q9  Thu 12 Mar 10:00 voice ru disability almaty   called +50 h, resolved +60 h      in time

    Questions 8; answered 5 (q1 q2 q3 q4 q9); due 6 (those and q5); in time 4 -> 66.7 %
    (KZ: 5 -> 83.3 %).
    Hours to the first callback attempt: 2 10 50 140 -> median 30, p90 50 + 0.7 * 90 = 113.
    Hours to resolution: 4 20 30 60 -> median 25, p90 30 + 0.7 * 30 = 51.
    """
    a = User(email="a@example.kz", name="Aigerim A", role="consultant", password_hash="x")
    b = User(email="b@example.kz", name="Bolat B", role="consultant", password_hash="x")
    session.add_all([a, b])
    session.flush()

    def question(created: datetime, channel: str, language: str, topic: str,
                 region: str | None, **extra: object) -> Question:
        q = Question(channel=channel, language=language, topic=topic, region=region,
                     created_at=created, priority_at=created, **extra)
        session.add(q)
        session.flush()
        return q

    def closed(reason: str, when: datetime, by: User, first_call: datetime | None = None
               ) -> dict[str, object]:
        return {"status": "closed", "close_reason": reason, "closed_at": when,
                "closed_by_id": by.id, "first_callback_at": first_call}

    q1 = question(at(2, 5), "voice", "ru", "pension", "almaty",
                  **closed("resolved", at(2, 5) + 4 * H, a, at(2, 5) + 2 * H))
    q2 = question(at(2, 10), "voice", "kk", "pension", "almaty",
                  **closed("resolved", at(2, 10) + 30 * H, a, at(2, 10) + 10 * H))
    q3 = question(at(3, 4), "sms", "kk", "disability", "jambyl",
                  **closed("resolved", at(3, 4) + 20 * H, b))
    q4 = question(at(4, 6), "voice", "ru", "social_assistance", None,
                  **closed("no_answer", at(4, 6) + 150 * H, a, at(4, 6) + 140 * H))
    q5 = question(at(6, 12), "voice", "ru", "pension", "almaty")
    q6 = question(at(8, 20), "voice", "kk", "documents", "jambyl",
                  **closed("silence", at(8, 21), a))
    q7 = question(at(10, 8), "voice", "ru", "pension", "almaty",
                  **closed("test_call", at(10, 9), a, at(10, 8) + H))
    q8 = question(at(18, 5), "voice", "ru", "pension", "almaty", status="claimed",
                  claimed_by_id=b.id, claimed_at=at(18, 6), claim_touched_at=at(18, 6))
    q9 = question(at(12, 10), "voice", "ru", "disability", "almaty",
                  **closed("resolved", at(12, 10) + 60 * H, b, at(12, 10) + 50 * H))
    for q, user, when in [(q1, a, q1.first_callback_at), (q2, a, q2.first_callback_at),
                          (q4, a, at(4, 7)), (q4, a, q4.first_callback_at),
                          (q9, b, q9.first_callback_at), (q7, a, at(10, 8) + H)]:
        session.add(CallbackAttempt(question_id=q.id, consultant_id=user.id, created_at=when,
                                    outcome="resolved"))
    # Calls that never rang a resident count in no consultant's load: Aigerim's own phone did
    # not answer (q5), Twilio refused Bolat's call (q8).
    session.add_all([
        CallbackAttempt(question_id=q5.id, consultant_id=a.id, created_at=at(6, 13),
                        state="failed", consultant_status="no-answer"),
        CallbackAttempt(question_id=q8.id, consultant_id=b.id, created_at=at(18, 7),
                        state="failed", error="refused")])
    # Bolat called q9's resident again from his own phone: a call, with no attempt row; in it he
    # also answered q3 (the same resident's, "with_question"): still one call.
    own_phone = {"outcome": "follow_up", "attempt_id": None, "failed_attempts": 0,
                 "own_phone": True}
    session.add_all([
        AuditEvent(user_id=b.id, action="outcome", question_id=q9.id, detail=own_phone,
                   at=at(12, 10) + 55 * H),
        AuditEvent(user_id=b.id, action="outcome", question_id=q3.id,
                   detail={**own_phone, "with_question": q9.id}, at=at(12, 10) + 55 * H)])

    def call(sid: str, status: str, *keys: tuple[str, str]) -> Call:
        c = Call(call_sid=sid, status=status, started_at=at(5, 6),
                 keys=[{"node": n, "digits": d, "at": at(5, 6).isoformat()} for n, d in keys],
                 last_node=keys[-1][0] if keys else None)
        session.add(c)
        session.flush()
        return c

    asked = call("CA1", "completed", ("language", "2"), ("main", "1"), ("pension", "2"))
    q1.call_id = asked.id
    call("CA2", "completed", ("main", "1"), ("pension", "1"))  # hung up in the explainer
    call("CA3", "completed")  # hung up before pressing anything
    call("CA4", "no-answer", ("main", "3"))
    call("CA5", "completed", ("main", "1"))
    call("CA6", "in-progress", ("main", "7"))  # still talking: not a hang-up
    # Setting up the line: q7's call, closed as a test call, counts in no menu either.
    q7.call_id = call("CA7", "completed", ("language", "1"), ("main", "4"), ("documents", "2")).id
    session.flush()
    return {"a": a.id, "b": b.id, **{f"q{i}": q.id for i, q in
                                     enumerate([q1, q2, q3, q4, q5, q6, q7, q8, q9], 1)}}


@pytest.fixture
def dataset(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """A database holding build_dataset's rows."""
    with session_factory.begin() as session:
        build_dataset(session)
    return session_factory


# -- pure helpers ---------------------------------------------------------------------------

def test_percentiles_interpolate_between_ranks() -> None:
    assert reports.percentile([10, 1, 3, 2], 0.5) == 2.5
    assert reports.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9) == pytest.approx(9.1)
    assert reports.percentile([7], 0.9) == 7
    assert reports.percentile([], 0.5) is None


def test_deadlines_count_working_days_in_almaty() -> None:
    weekdays = WorkCalendar()
    # Friday 23:30 in Almaty (18:30 UTC): Monday, Tuesday, Wednesday; ends Thursday 00:00.
    friday = datetime(2026, 3, 6, 18, 30, tzinfo=UTC)
    assert weekdays.deadline(friday, 3, LOCAL_TIME) == datetime(
        2026, 3, 12, 0, 0, tzinfo=LOCAL_TIME)
    # Friday 19:30 UTC is already Saturday in Almaty: the same three days.
    assert weekdays.deadline(friday + H, 3, LOCAL_TIME) == datetime(
        2026, 3, 12, 0, 0, tzinfo=LOCAL_TIME)
    assert weekdays.add_working_days(date(2026, 3, 2), 5) == date(2026, 3, 9)
    # Kazakhstan: Women's Day fell on Sunday 8 March 2026, so Monday 9 March is a day off.
    assert WorkCalendar("KZ").deadline(friday, 3, LOCAL_TIME) == datetime(
        2026, 3, 13, 0, 0, tzinfo=LOCAL_TIME)
    assert reports.iso_week(datetime(2026, 3, 8, 20, tzinfo=UTC), LOCAL_TIME) == "2026-W11"
    assert reports.iso_week(datetime(2026, 3, 8, 18, tzinfo=UTC), LOCAL_TIME) == "2026-W10"


# -- figures --------------------------------------------------------------------------------

def test_the_figures_match_the_dataset(dataset: sessionmaker[Session]) -> None:
    with dataset() as session:
        facts = reports.question_facts(session, MARCH)
    summary = reports.summarise(facts, NOW, 3, LOCAL_TIME, WorkCalendar())
    assert (summary.questions, summary.answered, summary.due, summary.within_target) == (
        8, 5, 6, 4)
    assert summary.share_within_target == pytest.approx(4 / 6)
    with_holidays = reports.summarise(facts, NOW, 3, LOCAL_TIME, WorkCalendar("KZ"))
    assert (with_holidays.due, with_holidays.within_target) == (6, 5)
    assert summary.to_callback.n == 4
    assert summary.to_callback.median == pytest.approx(30)
    assert summary.to_callback.p90 == pytest.approx(113)
    assert summary.to_resolution.n == 4
    assert summary.to_resolution.median == pytest.approx(25)
    assert summary.to_resolution.p90 == pytest.approx(51)
    weeks = reports.count_by(facts, lambda f: reports.iso_week(f.created_at, LOCAL_TIME))
    assert weeks == {"2026-W10": 5, "2026-W11": 2, "2026-W12": 1}
    assert reports.count_by(facts, lambda f: f.topic) == {
        "pension": 4, "disability": 2, "social_assistance": 1, "documents": 1}
    assert reports.count_by(facts, lambda f: f.region) == {"almaty": 5, "jambyl": 2, None: 1}
    assert reports.count_by(facts, lambda f: f.channel) == {"voice": 7, "sms": 1}
    assert reports.count_by(facts, lambda f: f.language) == {"ru": 5, "kk": 3}


def test_an_sms_answer_counts_as_answered(session_factory: sessionmaker[Session]) -> None:
    """The receipt promises an answer "by SMS or a call": a consultant's SMS answer that was
    not refused answers the question, at the time it was written, even before the question is
    closed. A failed one, or an automatic SMS (the receipt), does not."""
    with session_factory.begin() as session:
        lawyer = User(email="a@example.kz", name="Aigerim A", role="consultant",
                      password_hash="x")
        session.add(lawyer)
        session.flush()

        def sms_question(day: int, status: str | None, by: int | None) -> int:
            question = Question(channel="sms", language="ru", topic="pension",
                                created_at=at(day, 5), priority_at=at(day, 5))
            session.add(question)
            session.flush()
            if status is not None:
                session.add(SmsMessage(direction="out", phone="+77011234567", body="Ответ",
                                       status=status, question_id=question.id,
                                       sent_by_id=by, created_at=at(day, 10)))
            return question.id

        answered = sms_question(2, "delivered", lawyer.id)
        sms_question(3, "failed", lawyer.id)
        sms_question(4, "sent", None)  # a receipt: the hotline's, not an answer
        sms_question(18, None, None)  # still inside its deadline
    with session_factory() as session:
        facts = reports.question_facts(session, MARCH)
    assert [(f.id, f.answered_at) for f in facts if f.answered_at] == [(answered, at(2, 10))]
    summary = reports.summarise(facts, NOW, 3, LOCAL_TIME, WorkCalendar("KZ"))
    assert (summary.questions, summary.answered, summary.due, summary.within_target) == (
        4, 1, 3, 1)
    assert summary.to_callback.n == 0  # an SMS is no callback: the hours stay the calls'


def test_filters_narrow_the_questions(dataset: sessionmaker[Session]) -> None:
    with dataset() as session:
        almaty = reports.question_facts(session, reports.Filters(region="almaty"))
        unset = reports.question_facts(session, reports.Filters(region=reports.NOT_SET))
        first_week = reports.question_facts(session, reports.Filters(
            since=datetime(2026, 3, 2, tzinfo=LOCAL_TIME),
            until=datetime(2026, 3, 9, tzinfo=LOCAL_TIME), topic="pension"))
    assert len(almaty) == 5
    summary = reports.summarise(almaty, NOW, 3, LOCAL_TIME, WorkCalendar())
    assert summary.to_callback.median == pytest.approx(10)
    assert [f.topic for f in unset] == ["social_assistance"]
    assert [f.created_at for f in first_week] == [at(2, 5), at(2, 10), at(6, 12)]


def test_consultants_load(dataset: sessionmaker[Session]) -> None:
    with dataset() as session:
        loads = reports.consultant_load(session, MARCH)
    assert [(x.name, x.claimed_now, x.callback_attempts, x.closed_resolved, x.closed_other)
            for x in loads] == [("Aigerim A", 0, 4, 2, 2), ("Bolat B", 1, 2, 2, 0)]


def test_keys_and_hangups_come_from_the_calls(dataset: sessionmaker[Session]) -> None:
    with dataset() as session:
        presses = reports.key_presses(session, MARCH)
        left = reports.hangups(session, MARCH)
    assert presses == {("language", "2"): 1, ("main", "1"): 3, ("pension", "2"): 1,
                       ("pension", "1"): 1, ("main", "3"): 1, ("main", "7"): 1}
    assert left == {("pension", "1"): 1, (None, None): 1, ("main", "3"): 1,
                    ("main", "1"): 1}


# -- the page and its CSV -------------------------------------------------------------------

MARCH_QUERY = {"from": "2026-03-01", "to": "2026-03-31"}


@pytest.fixture
def reports_app(app: Flask, db: Db) -> Flask:
    """The app with build_dataset's rows in its database."""
    with db() as session:
        build_dataset(session)
    return app


def download(browser: Browser, table: str, **query: str) -> list[list[str]]:
    """Fetch one table as CSV and read it back with the csv module."""
    response = browser.get("/reports", query_string={**MARCH_QUERY, **query, "format": "csv",
                                                     "table": table})
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    assert response.data.startswith(b"\xef\xbb\xbf")  # Excel needs the BOM for UTF-8
    return list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"), newline="")))


def test_reports_need_a_coordinator(app: Flask, consultant: str, coordinator: str) -> None:
    assert Browser(app).get("/reports").headers["Location"] == "/login"
    assert Browser(app).get("/reports?format=csv&table=weeks").status_code == 302
    lawyer = Browser(app)
    lawyer.login(consultant)
    assert lawyer.get("/reports").status_code == 403
    assert lawyer.get("/reports?format=csv&table=weeks").status_code == 403
    assert "/reports" not in page(lawyer.get("/queue")).links
    boss = Browser(app)
    boss.login(coordinator)
    response = boss.get("/reports")
    assert response.status_code == 200
    assert page(response).headings == ["Reports"]
    assert response.headers["Cache-Control"] == "no-store"
    assert "/reports" in page(boss.get("/queue")).links
    assert boss.get("/reports?format=csv&table=nonsense").status_code == 404
    assert boss.get("/reports?from=yesterday").status_code == 400


def test_the_page_and_its_csv_show_the_figures(reports_app: Flask, coordinator: str) -> None:
    browser = Browser(reports_app)
    browser.login(coordinator)
    # Today is long after March: q5 and q8 are both late now; with Kazakhstan's holidays (the
    # default HOTLINE_HOLIDAYS) q4 was in time, so 5 of 7 were.
    assert download(browser, "summary") == [
        ["Figure", "Value", "Questions counted"],
        ["Questions received", "8", "8"],
        ["Answered (a callback attempt, an SMS answer, or resolved)", "5", "8"],
        ["Answered within 3 working days, %", "71.4", "7"],
        ["Hours to the first callback attempt: median", "30.0", "4"],
        ["Hours to the first callback attempt: 90th percentile", "113.0", "4"],
        ["Hours to resolution: median", "25.0", "4"],
        ["Hours to resolution: 90th percentile", "51.0", "4"],
    ]
    # Every week of 1-31 March, the silent ones as 0 (not closed up in the chart), each with
    # the days of it in the range: W09 is Sunday 1 March alone, W14 Monday 30 and Tuesday 31.
    assert download(browser, "weeks") == [["Week", "Starts on", "Days counted", "Questions"],
                                          ["2026-W09", "2026-02-23", "1", "0"],
                                          ["2026-W10", "2026-03-02", "7", "5"],
                                          ["2026-W11", "2026-03-09", "7", "2"],
                                          ["2026-W12", "2026-03-16", "7", "1"],
                                          ["2026-W13", "2026-03-23", "7", "0"],
                                          ["2026-W14", "2026-03-30", "2", "0"]]
    assert download(browser, "regions") == [["Region", "Questions", "Share, %"],
                                            ["Almaty (city)", "5", "62.5"],
                                            ["Jambyl Region", "2", "25.0"],
                                            ["region not set", "1", "12.5"]]
    assert download(browser, "channels")[1:] == [["Call", "7", "87.5"], ["SMS", "1", "12.5"]]
    assert download(browser, "consultants")[1:] == [["Aigerim A", "0", "4", "2", "2"],
                                                    ["Bolat B", "1", "2", "2", "0"]]
    assert download(browser, "menu")[1:] == [
        ["Main menu", "1", "Explainer: Pensions", "3"],
        ["Language menu", "2", "Русский", "1"],
        ["Main menu", "3", "Explainer: Disability", "1"],
        ["Main menu", "7", "wrong key: the menu repeats", "1"],
        ["Explainer: Pensions", "1", "hear again", "1"],
        ["Explainer: Pensions", "2", "Recording a question", "1"],
    ]
    assert download(browser, "explainers")[1:3] == [["Pensions", "3", "1", "1"],
                                                    ["Disability", "1", "0", "0"]]
    assert download(browser, "hangups")[1:] == [["Explainer: Pensions", "2"],
                                                ["Before pressing any key", "1"],
                                                ["Explainer: Disability", "1"]]

    # The HTML tables hold the same cells as the CSV files, table after table.
    html = page(browser.get("/reports", query_string=MARCH_QUERY)).rows
    from_csv = [row for name in TABLE_NAMES for row in download(browser, name)]
    assert html == [[cell or "—" for cell in row] for row in from_csv]


def test_the_report_and_its_csv_do_not_wait_for_the_writers(
        reports_app: Flask, settings: Settings, coordinator: str) -> None:
    """The report reads in a read-only transaction: on SQLite it neither queues behind a
    writer nor holds the webhooks' writes up while it reads."""
    if not settings.database_url.startswith("sqlite:"):
        pytest.skip("the writer queue is SQLite's")
    browser = Browser(reports_app)
    browser.login(coordinator)
    rows = beside_held_writer_queue(settings.database_url,
                                    lambda: download(browser, "weeks"))
    assert ["2026-W10", "2026-03-02", "7", "5"] in rows
    response = beside_held_writer_queue(
        settings.database_url, lambda: browser.get("/reports", query_string=MARCH_QUERY))
    assert response.status_code == 200


def test_the_note_says_which_days_count(reports_app: Flask, make_app: Callable[[Settings], Flask],
                                        settings: Settings, coordinator: str) -> None:
    def note(application: Flask, language: str) -> str:
        browser = Browser(application, language=language)
        browser.login(coordinator)
        html = browser.get("/reports", query_string=MARCH_QUERY).get_data(as_text=True)
        return " ".join(html.split())

    assert "3 working days, Monday to Friday except public holidays, Almaty" in note(
        reports_app, "en")
    assert "конец 3-го рабочего дня, пн–пт, кроме праздничных дней, по времени Алматы" in note(
        reports_app, "ru")
    assert "3-жұмыс күнінің соңы, дүйсенбі–жұма, мереке күндерінен басқа, Алматы" in note(
        reports_app, "kk")
    weekdays = make_app(settings.override(holidays=None))  # the same database
    assert "3 working days, Monday to Friday, Almaty" in note(weekdays, "en")
    browser = Browser(weekdays)
    browser.login(coordinator)
    assert download(browser, "summary")[3] == [
        "Answered within 3 working days, %", "57.1", "7"]


def test_a_mistyped_year_is_not_a_table_of_centuries(reports_app: Flask,
                                                     coordinator: str) -> None:
    """From 1900 to 9998: the weeks with questions, the silent ones of the last ten years up to
    this week as 0, and no week still to come."""
    browser = Browser(reports_app)
    browser.login(coordinator)
    rows = download(browser, "weeks", **{"from": "1900-01-01", "to": "9998-12-31"})[1:]
    this_week = reports.iso_week(datetime.now(UTC), LOCAL_TIME)
    assert rows[-1][0] == this_week
    assert len(rows) <= ZERO_WEEKS + 2
    weeks = [row[0] for row in rows]
    assert weeks == sorted(set(weeks))
    assert [row for row in rows if row[0] in ("2026-W10", "2026-W11", "2026-W12")] == [
        ["2026-W10", "2026-03-02", "7", "5"], ["2026-W11", "2026-03-09", "7", "2"],
        ["2026-W12", "2026-03-16", "7", "1"]]
    # This week is not over: only its days up to today are counted.
    today = datetime.now(UTC).astimezone(LOCAL_TIME)
    assert rows[-1][2] == str(today.isoweekday())
    # Dates all still to come: no week at all, rather than a week of 0 not lived yet.
    assert download(browser, "weeks", **{"from": "2999-01-01", "to": "2999-12-31"}) == [
        ["Week", "Starts on", "Days counted", "Questions"]]


def test_filters_apply_to_the_page(reports_app: Flask, coordinator: str) -> None:
    browser = Browser(reports_app)
    browser.login(coordinator)
    assert download(browser, "weeks", region="jambyl")[1:] == [
        ["2026-W09", "2026-02-23", "1", "0"], ["2026-W10", "2026-03-02", "7", "1"],
        ["2026-W11", "2026-03-09", "7", "1"], ["2026-W12", "2026-03-16", "7", "0"],
        ["2026-W13", "2026-03-23", "7", "0"], ["2026-W14", "2026-03-30", "2", "0"]]
    assert download(browser, "topics", region="-")[1:] == [
        ["Targeted social assistance", "1", "100.0"]]
    assert download(browser, "summary", topic="pension", to="2026-03-08")[1] == [
        "Questions received", "3", "3"]
    form = page(browser.get("/reports", query_string={**MARCH_QUERY, "region": "almaty"}))
    assert form.inputs["from"] == "2026-03-01"
    assert form.inputs["to"] == "2026-03-31"
    # Dates the wrong way round are the same range, not a page of zeros.
    backwards = {"from": "2026-03-31", "to": "2026-03-01"}
    assert download(browser, "summary", **backwards) == download(browser, "summary")
    assert download(browser, "summary")[1][1] != "0"
    form = page(browser.get("/reports", query_string=backwards))
    assert (form.inputs["from"], form.inputs["to"]) == ("2026-03-01", "2026-03-31")


def test_the_language_links_keep_the_filters(reports_app: Flask, coordinator: str) -> None:
    """A coordinator who switches to Russian (or Kazakh) on a filtered report stays on that
    report: its dates, region and topic, in the form, the figures and the CSV links."""
    browser = Browser(reports_app)
    browser.login(coordinator)
    filtered = {**MARCH_QUERY, "region": "almaty", "topic": "pension"}
    kept = "from=2026-03-01&to=2026-03-31&region=almaty&topic=pension"
    links = page(browser.get("/reports", query_string=filtered)).links
    assert f"/reports?{kept}&lang=kk" in links
    assert f"/reports?{kept}&lang=ru" in links
    response = browser.get(f"/reports?{kept}&lang=ru")
    russian = page(response)
    assert russian.lang == "ru"
    assert (russian.inputs["from"], russian.inputs["to"]) == ("2026-03-01", "2026-03-31")
    html = response.get_data(as_text=True)
    assert '<option value="almaty" selected>' in html
    assert '<option value="pension" selected>' in html
    assert f"/reports?{kept}&format=csv&table=summary" in russian.links
    # And back: the Russian page's own links keep them too.
    assert f"/reports?{kept}&lang=en" in russian.links


def test_csv_reads_back_cyrillic_quotes_commas_and_no_formulas(app: Flask, db: Db,
                                                             coordinator: str) -> None:
    tricky = 'Айгерим "Әже", Нұрланқызы\nекінші жол'
    with db() as session:
        session.add(User(email="tricky@example.kz", name=tricky, role="consultant",
                         password_hash="x"))
        session.add(User(email="formula@example.kz", name="=HYPERLINK(\"http://x\")",
                         role="consultant", password_hash="x"))
    browser = Browser(app, language="ru")
    browser.login(coordinator)
    rows = download(browser, "consultants")
    assert rows[0] == ["Консультант", "Сейчас у него", "Попытки перезвонить",
                       "Закрыто: решено", "Закрыто иначе"]
    names = [row[0] for row in rows[1:]]
    assert tricky in names
    assert "'=HYPERLINK(\"http://x\")" in names
