"""Reports for coordinators: questions by topic, region and week, answer times, consultants'
load, menu use and hang-ups; server-rendered SVG charts, and every table as CSV."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import Response, abort, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from flows.engine import LANGUAGE, UnknownNode
from hotline import auth, i18n
from hotline.config import LOCAL_TIME
from hotline.question_page import REGIONS, region_name, region_order
from hotline.workspace import CHANNELS, bp, node_title, runtime, topic_title
from storage import reports as figures
from storage.db import unit_of_work
from storage.models import ROLE_COORDINATOR, utcnow
from storage.workdays import WorkCalendar

DEFAULT_WEEKS = 12
Cell = str | int | float | None


@dataclass
class Table:
    """One table of the report: shown on the page, charted, and downloadable as CSV."""

    name: str
    title: str
    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    # (label, value) bars; None: no chart for this table.
    chart: list[tuple[str, float]] | None = None
    note: str = ""


@dataclass(frozen=True)
class FilterForm:
    """The filter form's values as the page shows them again."""

    start: date | None
    end: date | None
    region: str
    topic: str
    regions: list[tuple[str, str]]
    topics: list[tuple[str, str]]


# Dates a report can be asked for: at the ends of Python's calendar, turning local midnight into
# UTC (or the day after "to") overflows.
FIRST_DATE, LAST_DATE = date(1900, 1, 1), date(9998, 12, 31)


def _date(text: str | None) -> date | None:
    try:
        value = date.fromisoformat(text) if text else None
    except ValueError:
        abort(400)
    if value is not None and not FIRST_DATE <= value <= LAST_DATE:
        abort(400)
    return value


def parse_filters(today: date) -> tuple[date | None, date | None, str, str]:
    """Read the GET form: from and to (local dates, inclusive), region, topic.

    With no form at all the report covers the last DEFAULT_WEEKS weeks; an emptied date field
    means no bound. Dates given the wrong way round are swapped (and shown so in the form):
    a range that ends before it starts would show every figure as 0, which a coordinator
    could publish as "no questions".
    """
    args = request.args
    if "from" in args:
        start = _date(args.get("from"))
    else:
        start = today - timedelta(days=today.weekday(), weeks=DEFAULT_WEEKS - 1)
    end = _date(args.get("to")) if "to" in args else today
    if start is not None and end is not None and start > end:
        start, end = end, start
    return start, end, args.get("region", "")[:64], args.get("topic", "")[:64]


def to_filters(start: date | None, end: date | None, region: str, topic: str) -> figures.Filters:
    """Turn local dates into the UTC range storage.reports asks for."""
    return figures.Filters(
        since=datetime.combine(start, time(0), LOCAL_TIME) if start else None,
        until=datetime.combine(end + timedelta(days=1), time(0), LOCAL_TIME) if end else None,
        region=region or None, topic=topic or None)


def region_title(region: str | None) -> str:
    """Name a region code (questions are tagged with stable codes on their page)."""
    return region_name(region) if region else str(_("region not set"))


def _hours(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def _share(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


# -- what the keys mean -----------------------------------------------------------------------

def key_meaning(node: str, key: str) -> str:
    """Say what pressing key in node does."""
    flow = runtime().flow
    content = flow.content
    if not key:
        return str(_("silence"))
    if node == LANGUAGE and key in content.languages:
        code = content.languages[key]
        return i18n.LANGUAGES.get(code, code)
    try:
        target = flow.press(node, content.language_codes[0], key).node
    except UnknownNode:
        return str(_("unknown menu"))
    if target == node:
        if node in content.topics and key == "1":
            return str(_("hear again"))
        return str(_("wrong key: the menu repeats"))
    return node_title(target)


def where_left(node: str | None, key: str | None) -> str:
    """Name where a caller was when they hung up: the place their last key led to."""
    if node is None or key is None:
        return node_title(node)
    if not key:
        return node_title(node)
    try:
        content = runtime().flow.content
        language = None if node == LANGUAGE else content.language_codes[0]
        target = runtime().flow.press(node, language, key).node
    except UnknownNode:
        return node_title(node)
    return node_title(target)


# -- the tables ------------------------------------------------------------------------------

def _counts(name: str, title: str, first: str, counts: Counter[str],
            labels: dict[str, str] | None = None, order_by_label: bool = False) -> Table:
    total = sum(counts.values())
    items = sorted(counts.items(), key=lambda kv: kv[0] if order_by_label else (-kv[1], kv[0]))
    table = Table(name, title, [first, str(_("Questions")), str(_("Share, %"))])
    for key, count in items:
        label = (labels or {}).get(key, key)
        table.rows.append([label, count, _share(count, total)])
    table.chart = [(str(row[0]), float(row[1] or 0)) for row in table.rows]
    return table


def summary_table(summary: figures.Summary, target_days: int, calendar: WorkCalendar) -> Table:
    """The headline figures; calendar: which days counted as working days."""
    table = Table("summary", str(_("Summary")),
                  [str(_("Figure")), str(_("Value")), str(_("Questions counted"))])
    table.rows = [
        [str(_("Questions received")), summary.questions, summary.questions],
        [str(_("Answered (a callback attempt, an SMS answer, or resolved)")), summary.answered,
         summary.questions],
        [str(_("Answered within %(days)s working days, %%", days=target_days)),
         _share(summary.within_target, summary.due), summary.due],
        [str(_("Hours to the first callback attempt: median")),
         _hours(summary.to_callback.median), summary.to_callback.n],
        [str(_("Hours to the first callback attempt: 90th percentile")),
         _hours(summary.to_callback.p90), summary.to_callback.n],
        [str(_("Hours to resolution: median")), _hours(summary.to_resolution.median),
         summary.to_resolution.n],
        [str(_("Hours to resolution: 90th percentile")), _hours(summary.to_resolution.p90),
         summary.to_resolution.n],
    ]
    table.note = str(_(
        "Answered: a consultant tried to call back, answered by SMS, or closed the question as "
        "resolved. The "
        "share counts questions answered or past their deadline (the end of the last of "
        "%(days)s working days, %(weekdays)s, Almaty time, after the day they came in); "
        "questions closed without an answer (silence, wrong number, abusive) and test calls "
        "are left out.", days=target_days,
        weekdays=(_("Monday to Friday except public holidays") if calendar.country
                  else _("Monday to Friday"))))
    return table


# How far back from the last week shown weeks without questions still appear (as 0): ten years.
ZERO_WEEKS = 522


def weeks_table(facts: Sequence[figures.QuestionFacts], filters: figures.Filters,
                now: datetime) -> Table:
    """Questions by ISO week (Almaty time): every week of the chosen dates (from the first
    question's, with no start date; to this week, with no end date), a week without
    questions as 0 (a silent week is what a coordinator must see: a number misconfigured,
    a line down), not left out.

    Weeks after this one are not silent but still to come, and are not shown as 0; nor are
    weeks more than ZERO_WEEKS before the last one shown, unless they had questions: a year
    mistyped in a date (1026, 2206) is a table of a few hundred rows, not of fifty thousand.

    Each week says how many of its days the range holds ("Days counted"): the first and last
    weeks of a month are parts of weeks, and this week is not over; a week of 1 day with 0
    questions is no silent week.
    """
    counts = figures.count_by(facts, lambda f: figures.iso_week(f.created_at, LOCAL_TIME))
    table = Table("weeks", str(_("Questions by week")),
                  [str(_("Week")), str(_("Starts on")), str(_("Days counted")),
                   str(_("Questions"))])
    first = filters.since or min((f.created_at for f in facts), default=None)
    last = min(filters.until - timedelta(microseconds=1), now) if filters.until else now
    if first is not None:
        first = max(first, last - timedelta(weeks=ZERO_WEEKS))
    if first is not None and first <= last:  # (dates all to come: no week to fill)
        monday = figures.week_start(figures.iso_week(first, LOCAL_TIME))
        end = figures.week_start(figures.iso_week(last, LOCAL_TIME))
        while monday <= end:
            week = figures.iso_week(datetime.combine(monday, time(12), LOCAL_TIME), LOCAL_TIME)
            counts.setdefault(week, 0)
            monday += timedelta(weeks=1)
    since = filters.since.astimezone(LOCAL_TIME).date() if filters.since else None
    until = last.astimezone(LOCAL_TIME).date()
    for week, count in sorted(counts.items()):
        monday = figures.week_start(week)
        days = sum(1 for day in (monday + timedelta(days=n) for n in range(7))
                   if (since is None or day >= since) and day <= until)
        table.rows.append([week, monday.isoformat(), days, count])
    table.chart = [(str(row[0]), float(row[3] or 0)) for row in table.rows]
    return table


def consultants_table(loads: Sequence[figures.ConsultantLoad]) -> Table:
    """Each consultant's load."""
    table = Table("consultants", str(_("Consultants' load")),
                  [str(_("Consultant")), str(_("Holding now")), str(_("Callback attempts")),
                   str(_("Closed as resolved")), str(_("Closed otherwise"))])
    for load in loads:
        table.rows.append([load.name, load.claimed_now, load.callback_attempts,
                           load.closed_resolved, load.closed_other])
    table.chart = [(load.name, float(load.callback_attempts)) for load in loads]
    table.note = str(_("Holding now: questions claimed at this moment (any date). Attempts and "
                       "closes: in the chosen dates."))
    return table


def menu_tables(presses: Counter[tuple[str, str]],
                left: Counter[tuple[str | None, str | None]]) -> list[Table]:
    """Menu items, explainers and hang-ups, from the keys pressed on calls."""
    content = runtime().flow.content
    menu = Table("menu", str(_("Keys pressed in the menus")),
                 [str(_("Menu")), str(_("Key")), str(_("Leads to")), str(_("Presses"))])
    for (node, key), count in sorted(presses.items(), key=lambda kv: (-kv[1], kv[0])):
        menu.rows.append([node_title(node), key or "—", key_meaning(node, key), count])
    menu.chart = [(f"{row[0]} · {row[1]} → {row[2]}", float(row[3] or 0))
                  for row in menu.rows[:12]]
    menu.note = str(_("Calls started in the chosen dates; region and topic do not apply."))

    opened: Counter[str] = Counter()
    again: Counter[str] = Counter()
    asked: Counter[str] = Counter()
    for (node, key), count in presses.items():
        if node in content.menus and content.menus[node].options.get(key) in content.topics:
            opened[content.menus[node].options[key]] += count
        elif node in content.topics and key == "1":
            again[node] += count
        elif node in content.topics and key == "2":
            asked[node] += count
    explainers = Table("explainers", str(_("Explainers")),
                       [str(_("Explainer")), str(_("Chosen")), str(_("Heard again")),
                        str(_("Then asked a lawyer"))])
    for topic in sorted(content.topics, key=lambda t: (-opened[t], t)):
        explainers.rows.append([topic_title(topic), opened[topic], again[topic], asked[topic]])
    explainers.chart = [(str(row[0]), float(row[1] or 0)) for row in explainers.rows]

    where: Counter[str] = Counter()
    for (last_node, last_key), count in left.items():
        where[where_left(last_node, last_key)] += count
    hangups = Table("hangups", str(_("Where callers hung up without leaving a question")),
                    [str(_("Last heard")), str(_("Calls"))])
    for label, count in sorted(where.items(), key=lambda kv: (-kv[1], kv[0])):
        hangups.rows.append([label, count])
    hangups.chart = [(str(row[0]), float(row[1] or 0)) for row in hangups.rows]
    hangups.note = str(_("Ended calls without a question: the place the caller's last key led "
                         "to."))
    return [menu, explainers, hangups]


def build_tables(filters: figures.Filters, now: datetime) -> list[Table]:
    """Compute every table of the report for the filters."""
    rt = runtime()
    target = rt.settings.answer_target_days
    # Read-only: the report reads every question of its span (again for each CSV download),
    # and webhooks' writes go on beside it instead of queueing behind it.
    with unit_of_work(rt.sessions, read_only=True) as db:
        facts = figures.question_facts(db, filters)
        loads = figures.consultant_load(db, filters)
        presses = figures.key_presses(db, filters)
        left = figures.hangups(db, filters)
    summary = figures.summarise(facts, now, target, LOCAL_TIME, rt.settings.work_calendar)
    topics = figures.count_by(facts, lambda f: f.topic or "")
    topic_labels = {t: topic_title(t or None) for t in topics}
    regions = figures.count_by(facts, lambda f: f.region or "")
    region_labels = {r: region_title(r or None) for r in regions}
    languages = figures.count_by(facts, lambda f: f.language or "")
    language_labels = {code: i18n.LANGUAGES.get(code, code or "—") for code in languages}
    channels = figures.count_by(facts, lambda f: f.channel)
    channel_labels = {c: str(CHANNELS.get(c, c)) for c in channels}
    tables = [
        summary_table(summary, target, rt.settings.work_calendar),
        weeks_table(facts, filters, now),
        _counts("topics", str(_("Questions by topic")), str(_("Topic")), topics, topic_labels),
        _counts("regions", str(_("Questions by region")), str(_("Region")), regions,
                region_labels),
        _counts("languages", str(_("Questions by language")), str(_("Language")), languages,
                language_labels),
        _counts("channels", str(_("Questions by channel")), str(_("Channel")), channels,
                channel_labels),
        consultants_table(loads),
        *menu_tables(presses, left),
    ]
    for table in tables:
        if table.chart and not any(value > 0 for _label, value in table.chart):
            table.chart = None  # a chart of zeros says nothing the table does not
    return tables


# -- CSV -------------------------------------------------------------------------------------

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Cell) -> str:
    """Write a cell for a spreadsheet: numbers as they are, text never read as a formula."""
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return "'" + value if value.startswith(FORMULA_START) else value


def csv_response(table: Table, filename: str) -> Response:
    """Send table as a CSV file: UTF-8 with a byte order mark, so Excel reads Cyrillic."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([csv_cell(h) for h in table.headers])
    writer.writerows([csv_cell(c) for c in row] for row in table.rows)
    response = Response(out.getvalue().encode("utf-8-sig"),
                        content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


TABLE_NAMES = ("summary", "weeks", "topics", "regions", "languages", "channels", "consultants",
               "menu", "explainers", "hangups")


@bp.get("/reports")
@auth.role_required(ROLE_COORDINATOR)
def reports() -> ResponseReturnValue:
    """Show the reports for the filters, or one table as CSV (?format=csv&table=NAME)."""
    now = utcnow()
    start, end, region, topic = parse_filters(now.astimezone(LOCAL_TIME).date())
    tables = build_tables(to_filters(start, end, region, topic), now)
    if request.args.get("format") == "csv":
        wanted = request.args.get("table", "")
        chosen = next((t for t in tables if t.name == wanted), None)
        if chosen is None:
            abort(404)
        span = f"{start or 'start'}_{end or 'now'}"
        return csv_response(chosen, f"hotline-{chosen.name}-{span}.csv")
    with unit_of_work(runtime().sessions, read_only=True) as db:
        regions, topics = figures.regions_and_topics(db)
    content_topics = list(runtime().flow.content.topics)
    form = FilterForm(
        start=start, end=end, region=region, topic=topic,
        regions=sorted(((r, region_title(r)) for r in dict.fromkeys([*REGIONS, *regions])),
                       key=lambda pair: region_order(*pair))
        + [(figures.NOT_SET, region_title(None))],
        topics=[(t, topic_title(t)) for t in dict.fromkeys([*content_topics, *topics])]
        + [(figures.NOT_SET, topic_title(None))],
    )
    query: dict[str, Any] = {"from": start.isoformat() if start else "",
                             "to": end.isoformat() if end else "", "region": region,
                             "topic": topic}
    csv_links = {t.name: url_for("workspace.reports", **query, format="csv", table=t.name)
                 for t in tables}
    return render_template("reports.html", tables=tables, form=form, csv_links=csv_links,
                           generated=now.astimezone(LOCAL_TIME).strftime("%Y-%m-%d %H:%M"))
