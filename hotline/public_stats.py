"""Public transparency figures, with no login: questions received and answered, time to a
callback, top topics, by month and region; the same figures as JSON.

No person can be singled out: a count from 1 to 4 is suppressed ("hidden" on the page, null
with `"suppressed": true, "reason": "hidden"` in JSON), and so is a figure derived from fewer
than 5 questions (a median; "—", reason "few"). Where a breakdown's total is published and a
cell is suppressed, the next smallest cells are suppressed too (protect), so the hidden one
cannot be worked out by subtraction. Those may hold 5 or more, so no hidden count reads "<5";
and all read alike, since a small one told apart from its protectors could be worked out
(hidden 1 and 5 beside a published 20 and 30 and a total of 56). A zero is shown: it is about
nobody. Received less answered (those not called back) is published too, as a difference, so
the answered column is protected with it (protect_rows): hidden with a hidden received, when
small, when received less answered is small, and beside others until the hidden ones hold at
least MIN_COUNT answered and MIN_COUNT not; a median only beside a published answered count.
With fewer than MIN_COUNT questions in all, nothing is broken down.

Only completed months are published, as they stood when they ended: the questions of the
PERIOD_MONTHS months before the one that ended last, each counted as answered (and its
callback time taken) only if that happened before that month ended. The figures change once a
month, a day and some hours after the turn of the month (Almaty time; publication(): a late
recording of the month's last evening is in by then): the first computation after that is
kept in the database (public_snapshots) and served from there until the next month's, so
that a region or topic tagged afterwards does not change them either. Published afresh every
minute, two versions a minute apart would differ by the one call in between, and a neighbour
who knew who called when would read its region, topic, and whether it was answered, whatever
the suppression rules hide.

The pages need no cookie: the language is in the path (/public/kk, /public/ru, /public/en) or
chosen from Accept-Language at /public, and shared caches may keep anonymous responses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from babel.dates import format_date
from flask import Blueprint, Response, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from flask_babel import force_locale
from flask_babel import gettext as _
from werkzeug.exceptions import HTTPException, InternalServerError

from hotline import i18n
from hotline.config import LOCAL_TIME
from hotline.memo import Result, kept_or_older
from hotline.reports_page import region_title
from hotline.workspace import error_text, runtime, topic_title
from storage import reports as figures
from storage.db import unit_of_work
from storage.models import utcnow

MIN_COUNT = 5
PERIOD_MONTHS = 12
CACHE_SECONDS = 600
# While the figures cannot be computed afresh: caches keep the older ones this long only.
STALE_CACHE_SECONDS = 60
# How long this app reuses the figures it computed (current_stats).
STATS_SECONDS = 60.0
_KEPT_AS = "public_stats"
PUBLIC_LANGUAGES = ("kk", "ru", "en")

bp = Blueprint("public", __name__, url_prefix="/public")


@dataclass(frozen=True)
class Figure:
    """A published number, or the fact that it is held back, and why: "hidden" (a count: from
    1 to MIN_COUNT - 1, or of any size hidden too so that a small one beside it cannot be
    worked out from the total; the two read alike, since telling them apart would let a
    reader work the small one out; also an answered count hidden by protect_rows, and a median
    beside a hidden answered count), "few" (computed from fewer than MIN_COUNT questions)."""

    value: int | float | None
    suppressed: bool = False
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The figure as JSON: the value (null when suppressed), the flag, and the reason."""
        shown: dict[str, Any] = {"value": self.value, "suppressed": self.suppressed}
        if self.suppressed:
            shown["reason"] = self.reason
        return shown


HIDDEN = Figure(None, True, "hidden")
FEW = Figure(None, True, "few")


def count_figure(count: int) -> Figure:
    """Publish a count, unless it is from 1 to MIN_COUNT - 1."""
    return HIDDEN if 0 < count < MIN_COUNT else Figure(count)


def derived_figure(value: float | None, based_on: int) -> Figure:
    """Publish a figure computed from based_on questions, unless they are fewer than MIN_COUNT
    (none included: a blank for none told apart from "few" for 1 to 4 would tell that a row's
    few callbacks were not none, beside a published answered count that holds other answers)."""
    if based_on < MIN_COUNT or value is None:
        return FEW
    return Figure(round(value, 1))


def protect(counts: Sequence[int]) -> list[Figure]:
    """Publish a breakdown whose total is published: small cells hidden, and never so few.

    The total minus the published cells is the sum of the hidden ones; that sum must not
    single anyone out either. So while any cell is hidden, the next smallest published cell
    is hidden too until at least two are hidden and together they hold at least MIN_COUNT
    questions: one hidden 3 would be the total's difference, and two hidden 1s (a total of
    52 beside a published 50) would be two questions of one each.
    """
    shown = [count_figure(c) for c in counts]
    hidden = [i for i, f in enumerate(shown) if f.suppressed]
    while hidden and (len(hidden) < 2 or sum(counts[i] for i in hidden) < MIN_COUNT):
        others = [i for i, c in enumerate(counts) if not shown[i].suppressed and c > 0]
        if not others:
            break
        smallest = min(others, key=lambda i: (counts[i], i))
        shown[smallest] = HIDDEN
        hidden.append(smallest)
    return shown


def protect_rows(received: Sequence[int],
                 answered: Sequence[int]) -> tuple[list[Figure], list[Figure]]:
    """Publish a breakdown's received and answered columns, both with published totals.

    Received: protect(). Answered: the unanswered (received - answered) is published too, as a
    difference, so an answered count is hidden when it is from 1 to MIN_COUNT - 1, when the
    unanswered beside it is, and whenever the row's received is hidden (else a hidden received
    could be worked out from the total with the answered as a floor, and a 0 would tell that
    a hidden resident was not called back). Then, while any answered cell is hidden, the
    answered of the next rows are hidden too (the smallest answered first, among the rows with
    questions, and one that helps) until at least two are hidden and the hidden ones together
    hold at least MIN_COUNT answered and at least MIN_COUNT unanswered questions (or all there
    are, when the totals hold fewer): the totals less the published cells are those two sums,
    and a small one, or a 0, would tell about the few residents in the hidden rows.
    """
    shown_received = protect(received)
    unanswered = [r - a for r, a in zip(received, answered, strict=True)]
    total_answered, total_unanswered = sum(answered), sum(unanswered)
    hidden = [i for i, r in enumerate(shown_received)
              if r.suppressed or 0 < answered[i] < MIN_COUNT or 0 < unanswered[i] < MIN_COUNT]

    def lacking() -> tuple[bool, bool, bool]:
        few_rows = len(hidden) < 2
        few_answered = sum(answered[i] for i in hidden) < min(MIN_COUNT, total_answered)
        few_unanswered = (sum(unanswered[i] for i in hidden)
                          < min(MIN_COUNT, total_unanswered))
        return few_rows, few_answered, few_unanswered

    while hidden and any(lacking()):
        few_rows, few_answered, few_unanswered = lacking()
        others = [i for i, r in enumerate(received) if i not in hidden and r > 0]
        helping = [i for i in others
                   if few_rows or (few_answered and answered[i] > 0)
                   or (few_unanswered and unanswered[i] > 0)]
        if not helping:
            break
        hidden.append(min(helping, key=lambda i: (answered[i], received[i], i)))
    shown_answered = [HIDDEN if i in hidden else Figure(a) for i, a in enumerate(answered)]
    return shown_received, shown_answered


@dataclass(frozen=True)
class Row:
    """One line of a breakdown: its key (a month, region or topic code), its figures."""

    key: str | None
    received: Figure
    answered: Figure
    median_hours: Figure


@dataclass(frozen=True)
class PublicStats:
    """Everything the public page and its JSON show."""

    first_month: str
    last_month: str
    # The first moment after the last month (local midnight of its next month's first day):
    # the figures are those of that moment (in demo mode: of computed_at).
    as_of: datetime
    total: Row
    months: list[Row]
    regions: list[Row]
    topics: list[Row]
    computed_at: datetime  # UTC
    # When the next month's figures are computed (publication()); not kept with the figures.
    next_update: datetime | None = None
    # Demo mode: this month so far too, computed afresh (_live_stats), not kept.
    live: bool = False


def last_months(today: date, count: int) -> list[str]:
    """The count months up to and including today's, oldest first, as YYYY-MM (today: a
    day of the last month wanted)."""
    year, month = today.year, today.month
    names = []
    for _month in range(count):
        names.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return names[::-1]


def _median_hours(facts: Sequence[figures.QuestionFacts]) -> Figure:
    hours = [figures.hours_between(f.created_at, f.first_callback_at) for f in facts
             if f.first_callback_at is not None]
    return derived_figure(figures.percentile(hours, 0.5), len(hours))


def breakdown(facts: Sequence[figures.QuestionFacts], keys: Sequence[str | None],
              key: Callable[[figures.QuestionFacts], str | None]) -> list[Row]:
    """Rows for keys (those not in keys are dropped), with the suppression rules applied."""
    groups: dict[str | None, list[figures.QuestionFacts]] = {k: [] for k in keys}
    for fact in facts:
        if key(fact) in groups:
            groups[key(fact)].append(fact)
    received, answered = protect_rows(
        [len(groups[k]) for k in keys],
        [sum(f.answered_at is not None for f in groups[k]) for k in keys])
    # A median told of a row tells that its callbacks, and so its answered, are at least
    # MIN_COUNT: shown only beside a published answered count.
    return [Row(k, received[i], answered[i],
                HIDDEN if answered[i].suppressed else _median_hours(groups[k]))
            for i, k in enumerate(keys)]


def _keys(facts: Sequence[figures.QuestionFacts],
          key: Callable[[figures.QuestionFacts], str | None]) -> list[str | None]:
    return list(dict.fromkeys(key(f) for f in facts))


def by_size(rows: list[Row]) -> list[Row]:
    """Largest published count first; the suppressed last, by code, so their order tells
    nothing about their size; the row without a code (not set) last of its kind."""
    return sorted(rows, key=lambda r: (r.received.suppressed,
                                       -(r.received.value or 0), r.key is None, r.key or ""))


def month_start(day: date) -> datetime:
    """The first moment (Almaty time) of day's month."""
    return datetime.combine(day.replace(day=1), time(0), LOCAL_TIME)


def next_month_start(start: datetime) -> datetime:
    """The first moment of the month after the one that starts at start."""
    return month_start(start.date() + timedelta(days=32))


# After a month ends, its figures wait this long beyond the recording catch-up's look-back
# (HOTLINE_RECORDING_CATCHUP_HOURS: a recording Twilio reported late keeps the time of its
# call), so that a question of the month's last evening found the next day is in them, not in
# the next month's version of that month's row (which would then differ by that one call).
PUBLISH_MARGIN = timedelta(hours=6)


def publication(now: datetime, catchup_hours: int) -> tuple[datetime, datetime]:
    """The moment the figures published at now describe (the start of the month after the
    last one published) and when the next month's are: each month's figures are computed
    catchup_hours + PUBLISH_MARGIN after it ends."""
    delay = timedelta(hours=max(catchup_hours, 0)) + PUBLISH_MARGIN
    as_of = month_start((now - delay).astimezone(LOCAL_TIME).date())
    return as_of, next_month_start(as_of) + delay


def as_it_stood(fact: figures.QuestionFacts, moment: datetime) -> figures.QuestionFacts:
    """The question as it stood at moment: a callback, SMS answer or close that came after it
    left out (the question was created before it)."""
    def before(when: datetime | None) -> datetime | None:
        return when if when is not None and when < moment else None

    closed_at = before(fact.closed_at)
    return replace(fact, first_callback_at=before(fact.first_callback_at),
                   first_sms_answer_at=before(fact.first_sms_answer_at), closed_at=closed_at,
                   close_reason=fact.close_reason if closed_at is not None else None)


def compute(facts: Sequence[figures.QuestionFacts], months: Sequence[str],
            computed_at: datetime, as_of: datetime | None = None) -> PublicStats:
    """Turn the period's questions, read at computed_at, into the published figures: as
    they stood at as_of (the end of the last month), those created later left out; as read,
    when as_of is not given."""
    if as_of is None:
        as_of = computed_at
    else:
        facts = [as_it_stood(f, as_of) for f in facts if f.created_at < as_of]
    # The totals are a breakdown of one row: the same rules (a small unanswered hides the
    # answered; the median only beside a published answered).
    [total] = breakdown(facts, [None], lambda _fact: None)
    if total.received.suppressed:
        # From 1 to MIN_COUNT - 1 questions in all: nothing is broken down. Each region or
        # topic listed has a question, and the hidden total is at most MIN_COUNT - 1: four
        # regions listed would be four questions of one each; nor is the first month told.
        return PublicStats(first_month=months[0], last_month=months[-1], as_of=as_of,
                           total=total, months=[], regions=[], topics=[], computed_at=computed_at)
    # Months before the first question are left out (a new hotline has no empty year).
    active = {figures.month(f.created_at, LOCAL_TIME) for f in facts}
    months = [m for i, m in enumerate(months) if active & set(months[:i + 1])] or months[-1:]
    return PublicStats(
        first_month=months[0], last_month=months[-1], as_of=as_of, total=total,
        months=breakdown(facts, months, lambda f: figures.month(f.created_at, LOCAL_TIME)),
        regions=by_size(breakdown(facts, _keys(facts, lambda f: f.region), lambda f: f.region)),
        topics=by_size(breakdown(facts, _keys(facts, lambda f: f.topic), lambda f: f.topic)),
        computed_at=computed_at,
    )


def current_stats() -> Result[PublicStats]:
    """The public figures of the PERIOD_MONTHS months up to the last one published (see the
    module), read at most once every STATS_SECONDS by this app (hotline.memo): the page needs
    no login, so visitors asking often, or many at once, cost the database one read a minute
    (and the month's first computation, of every question of those months, once). Through a
    database outage the last figures stay (unavailable, when there are none yet), marked
    stale.

    Stale figures: the page and the JSON say so, with the time they were computed, and caches
    keep them for STALE_CACHE_SECONDS only. Fresh figures carry no time: they are at most
    STATS_SECONDS old, and a time that changed every minute would change the ETag with it, so
    that a cache could never revalidate them."""
    return kept_or_older(_KEPT_AS, STATS_SECONDS, _compute_stats)


def _figure_document(figure: Figure) -> dict[str, Any]:
    return {"value": figure.value, "suppressed": figure.suppressed, "reason": figure.reason}


def _row_document(row: Row) -> dict[str, Any]:
    return {"key": row.key, "received": _figure_document(row.received),
            "answered": _figure_document(row.answered),
            "median_hours": _figure_document(row.median_hours)}


def to_document(stats: PublicStats) -> dict[str, Any]:
    """The figures as a JSON-able document, to be kept (storage.reports.keep_public_snapshot)."""
    return {"first_month": stats.first_month, "last_month": stats.last_month,
            "as_of": stats.as_of.isoformat(), "computed_at": stats.computed_at.isoformat(),
            "total": _row_document(stats.total),
            "months": [_row_document(r) for r in stats.months],
            "regions": [_row_document(r) for r in stats.regions],
            "topics": [_row_document(r) for r in stats.topics]}


def from_document(document: dict[str, Any]) -> PublicStats:
    """The figures to_document kept."""
    def row(kept: dict[str, Any]) -> Row:
        return Row(kept["key"], Figure(**kept["received"]), Figure(**kept["answered"]),
                   Figure(**kept["median_hours"]))

    return PublicStats(
        first_month=document["first_month"], last_month=document["last_month"],
        as_of=datetime.fromisoformat(document["as_of"]),
        computed_at=datetime.fromisoformat(document["computed_at"]),
        total=row(document["total"]), months=[row(r) for r in document["months"]],
        regions=[row(r) for r in document["regions"]],
        topics=[row(r) for r in document["topics"]])


def _compute_stats() -> PublicStats:
    """The figures of the months up to the last one: kept in the database (public_snapshots)
    by the first computation after that month ended, and read from there after. A question
    tagged with another region or topic later, or one Twilio's catch-up brings in late, does
    not change figures once published (it counts in no month's: its month is published)."""
    now = utcnow()
    settings = runtime().settings
    if settings.demo:
        return _live_stats(now)
    as_of, next_update = publication(now, settings.recording_catchup_hours)
    months = last_months((as_of - timedelta(days=1)).date(), PERIOD_MONTHS)
    # Read-only: it reads every question of the months, and must not hold up the webhooks.
    with unit_of_work(runtime().sessions, read_only=True) as db:
        kept = figures.public_snapshot(db, months[-1])
        document = kept.figures if kept is not None else None
        facts = [] if kept is not None else figures.question_facts(
            db, figures.Filters(since=_first_moment(months), until=as_of))
    if document is None:
        computed = to_document(compute(facts, months, now, as_of))
        with unit_of_work(runtime().sessions) as db:
            document = figures.keep_public_snapshot(db, months[-1], now, computed).figures
    return replace(from_document(document), next_update=next_update)


def _first_moment(months: Sequence[str]) -> datetime:
    year, month = (int(part) for part in months[0].split("-"))
    return month_start(date(year, month, 1))


def _live_stats(now: datetime) -> PublicStats:
    """Demo mode (`make run`): the months up to this one, this month so far included, as they
    are now, computed afresh each time and kept nowhere. A demo's questions are all of today,
    and the page would otherwise stay empty until the month is over; a demo holds no resident
    to protect. Production never takes this path (HOTLINE_DEMO is off there)."""
    months = last_months(now.astimezone(LOCAL_TIME).date(), PERIOD_MONTHS)
    with unit_of_work(runtime().sessions, read_only=True) as db:
        facts = figures.question_facts(db, figures.Filters(since=_first_moment(months)))
    return replace(compute(facts, months, now), live=True)


def _cacheable(response: Response, is_stale: bool, live: bool = False) -> Response:
    # Anonymous responses may sit in shared caches; a logged-in visitor's session cookie is
    # refreshed on every response, and such a response must never be shared.
    scope = "private" if request.cookies else "public"
    # Stale, or a demo's (recomputed every minute): a minute, not ten.
    seconds = STALE_CACHE_SECONDS if is_stale or live else CACHE_SECONDS
    response.headers["Cache-Control"] = f"{scope}, max-age={seconds}"
    response.add_etag()
    response.make_conditional(request)
    return response


def _topic_titles(topic: str | None) -> dict[str, str]:
    titles = {}
    for language in PUBLIC_LANGUAGES:
        with force_locale(language):
            titles[language] = topic_title(topic)
    return titles


def _region_titles(region: str | None) -> dict[str, str]:
    titles = {}
    for language in PUBLIC_LANGUAGES:
        with force_locale(language):
            titles[language] = region_title(region)
    return titles


def _row_json(row: Row, name: str) -> dict[str, Any]:
    return {name: row.key, "received": row.received.as_json(),
            "answered": row.answered.as_json(),
            "median_hours_to_callback": row.median_hours.as_json()}


def _next_update(stats: PublicStats) -> datetime:
    """When the next figures come (Almaty time)."""
    return (stats.next_update or next_month_start(stats.as_of)).astimezone(LOCAL_TIME)


def stats_json(stats: PublicStats, is_stale: bool) -> dict[str, Any]:
    """The published figures as a JSON document; is_stale: see current_stats() (then computed_at
    too)."""
    totals = _row_json(stats.total, "period")
    totals.pop("period")
    return {
        "period": {"from_month": stats.first_month, "to_month": stats.last_month,
                   "time_zone": "Asia/Almaty"},
        # The moment the figures describe (the end of to_month) and when they change next.
        "as_of": stats.as_of.isoformat(),
        "next_update": None if stats.live else _next_update(stats).date().isoformat(),
        "updates": ("demo mode: this month so far too, recomputed every minute (a real "
                    "hotline publishes completed months only)" if stats.live else
                    "once a month: only completed months are published, as they stood when "
                    "they ended, so that no single call can be told from a change in them"),
        "stale": is_stale,
        **({"computed_at": stats.computed_at.isoformat()} if is_stale else {}),
        "min_count": MIN_COUNT,
        "suppression": (f"Counts from 1 to {MIN_COUNT - 1}, and figures computed from "
                        f"fewer than {MIN_COUNT} questions (reason: few), are null with "
                        "suppressed: true. Where a breakdown has hidden cells, the next "
                        "smallest published ones are hidden too, of any size, until at least "
                        f"two are hidden and together they hold at least {MIN_COUNT} "
                        "questions, so that none can be worked out from the total. Received "
                        "less answered is published too: a row's answered is hidden when its "
                        "received is, when it or received less answered is from 1 to "
                        f"{MIN_COUNT - 1}, and beside others until the hidden ones together "
                        f"hold at least {MIN_COUNT} answered and {MIN_COUNT} not answered (or "
                        "all there are). A median is shown only beside a published answered "
                        "count (reason: hidden otherwise). Every hidden count has reason: "
                        "hidden, whichever rule hid it: telling the rules apart would let the "
                        f"small one be worked out. With fewer than {MIN_COUNT} questions in "
                        "all, nothing is broken down."),
        "answered": ("a consultant tried to call back, answered by SMS, or the question was "
                     "resolved"),
        "totals": totals,
        "by_month": [_row_json(row, "month") for row in stats.months],
        "by_region": [{**_row_json(row, "region"), "title": _region_titles(row.key)}
                      for row in stats.regions],
        "by_topic": [{**_row_json(row, "topic"), "title": _topic_titles(row.key)}
                     for row in stats.topics],
    }


@bp.errorhandler(InternalServerError)
def unavailable(_error: InternalServerError) -> ResponseReturnValue:
    """The figures could not be computed (the database did not answer; logged by Flask): say
    so in the page's language, or in JSON, rather than with Werkzeug's English page; 503, so
    that a cache or a script tries again later."""
    if request.endpoint == "public.stats":
        response = jsonify({"error": "The figures cannot be computed just now; try again in "
                                     "a few minutes."})
    else:
        language = (request.view_args or {}).get("language") or _visitor_language()
        with force_locale(language):
            html = render_template("public_unavailable.html", page_language=language,
                                   public_languages=PUBLIC_LANGUAGES)
        response = Response(html, mimetype="text/html")
        response.headers["Content-Language"] = language
    response.status_code = 503
    response.headers["Retry-After"] = "300"
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(error: HTTPException) -> Response:
    """An address under /public that no page has (/public/de), or a page asked for in a way
    it does not answer (a POST: 405), or any address no page has for a visitor not logged in:
    said in the language of the path (/public/ru/...) or of the visitor's browser, in the
    public pages' frame, with no cookie, as the pages are (hotline.workspace.page_error sends
    these here). Outside /public the visitor is most likely a consultant whose session
    expired, following an old or mistyped link: the language they chose in the workspace
    (?lang=, its cookie) comes before the browser's, and the page offers to log in."""
    public = request.path == "/public" or request.path.startswith("/public/")
    asked = request.path.split("/")[2:3]
    if not public:
        language = i18n.select_language()
    elif asked and asked[0] in PUBLIC_LANGUAGES:
        language = asked[0]
    else:
        language = _visitor_language()
    assert error.code is not None
    with force_locale(language):
        if error.code == 404:
            title, message = _("Not found"), _("There is no such page here.")
        else:
            title, message = error_text(error.code)
        html = render_template("public_message.html", title=title, message=message,
                               page_language=language, public_languages=PUBLIC_LANGUAGES,
                               log_in=not public)
    response = Response(html, error.code, mimetype="text/html")
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value  # a 405's Allow
    response.headers["Content-Language"] = language
    response.vary.add("Accept-Language")
    if not public:
        response.vary.add("Cookie")
    return response


@bp.get("/stats.json")
def stats() -> ResponseReturnValue:
    """Send the public figures as JSON."""
    figures_now = current_stats()
    response = jsonify(stats_json(figures_now.value, figures_now.stale))
    response.headers["Access-Control-Allow-Origin"] = "*"
    return _cacheable(response, figures_now.stale, figures_now.value.live)


def _bar(figure: Figure) -> int | float | str | None:
    """A chart bar's value: the number, or "hidden"."""
    return str(_("hidden")) if figure.suppressed else figure.value


# Babel patterns for a month of the page (YYYY-MM) in each language, by where it stands: on
# its own in the months' table and chart ("label"), after "from" and after "to" in the
# sentence of the period, and as the period's only month ("in").
#   ru: the stand-alone form on its own ("декабрь 2026", LLLL); after "с" the genitive, which
#       is Babel's format form ("с декабря 2026", MMMM); after "по" and "за" the accusative,
#       the nominative for a month ("по январь 2027", "за январь 2027": LLLL).
#   kk: the year first and the month in lower case, as Kazakh writes a date (Babel's LLLL is
#       capitalised: "Желтоқсан"; its MMMM is not). In the table "2026 ж. желтоқсан" (CLDR's
#       own year-and-month); in the sentence, running text, the year in full: "2026 жылғы
#       желтоқсан". The period is "2026 жылғы желтоқсан – 2027 жылғы қаңтар аралығында",
#       one month "2027 жылғы қаңтар айында" (the .po files): a case ending on the month's
#       own name ("желтоқсаннан ... қаңтарға дейін") follows its vowels and last letter
#       (наурыздан, қыркүйектен), which Babel does not know, so no month name takes one.
#   en: "December 2026" everywhere.
MONTH_PATTERNS = {
    "kk": {"label": "y 'ж'. MMMM", "from": "y 'жылғы' MMMM", "to": "y 'жылғы' MMMM",
           "in": "y 'жылғы' MMMM"},
    "ru": {"label": "LLLL y", "from": "MMMM y", "to": "LLLL y", "in": "LLLL y"},
    "en": {"label": "LLLL y", "from": "LLLL y", "to": "LLLL y", "in": "LLLL y"},
}


def month_name(key: str, language: str, place: str = "label") -> str:
    """A YYYY-MM month as people read it in language, in the form its place asks for
    (MONTH_PATTERNS): "2026 ж. қазан" and "октябрь 2026" in the table, "октября 2026" after
    "с" in Russian."""
    year, month = key.split("-")
    return format_date(date(int(year), int(month), 1), MONTH_PATTERNS[language][place],
                       locale=language)


def _render(language: str) -> Response:
    """The page in language, cacheable."""
    kept_now = current_stats()
    stats, is_stale = kept_now.value, kept_now.stale
    with force_locale(language):
        def month_title(key: str | None, place: str = "label") -> str:
            return month_name(key, language, place) if key else ""

        topic_bars = [(topic_title(row.key), _bar(row.received)) for row in stats.topics]
        month_bars = [(month_title(row.key), _bar(row.received)) for row in stats.months]
        # Without its own final full stop (Russian's "2 января 2027 г."): the sentence ends it.
        next_update = format_date(_next_update(stats).date(), "long",
                                  locale=language).rstrip(".")
        html = render_template("public.html", stats=stats, page_language=language,
                               next_update=next_update,
                               public_languages=PUBLIC_LANGUAGES, topic_title=topic_title,
                               region_title=region_title, month_title=month_title,
                               topic_bars=topic_bars, month_bars=month_bars,
                               as_of=stats.computed_at.astimezone(LOCAL_TIME)
                               .strftime("%d.%m.%Y %H:%M"), stale=is_stale)
    response = Response(html, mimetype="text/html")
    response.headers["Content-Language"] = language
    return _cacheable(response, is_stale, stats.live)


def _visitor_language() -> str:
    """The visitor's language among the public page's (Accept-Language), Kazakh otherwise."""
    return request.accept_languages.best_match(PUBLIC_LANGUAGES) or i18n.DEFAULT_LANGUAGE


@bp.get("")
def page() -> ResponseReturnValue:
    """Show the public figures in the visitor's language (Accept-Language; Kazakh otherwise)."""
    response = _render(_visitor_language())
    response.vary.add("Accept-Language")
    return response


@bp.get("/<any(kk, ru, en):language>")
def page_in(language: str) -> ResponseReturnValue:
    """Show the public figures in one language."""
    return _render(language)
