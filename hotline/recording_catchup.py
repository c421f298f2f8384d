"""Recorded questions that Twilio holds and no webhook stored: found in Twilio's list, queued.

A question reaches the database through the <Record> action or the recording status callback.
When both fail (the database down for a minute, a network fault between Twilio and us), the
action's caller hears the apology and the status callback gets a 503, but Twilio sends a
callback again after a 5xx only when the URL's connection overrides ask for it, which by
default they do not: the recording would stay at Twilio, a question nobody calls back.

So a periodic job (every 10 minutes, `hotline.jobs.catch_up_recordings_job`) and
`hotline recordings catch-up` read the account's recordings of the last
HOTLINE_RECORDING_CATCHUP_HOURS (default 24) from Twilio's REST API and queue each one that:

- was made by <Record> (source RecordVerb: a question; a bridged callback's recording is not),
  is completed and not empty, and is older than GRACE (the webhooks, and Twilio's own retries,
  come first);
- is not stored yet (by RecordingSid, the same key the webhooks use: a late webhook for it
  finds the row and adds nothing);
- belongs to a call to the hotline: a call we have a row for, or, when the incoming call was
  lost too, a call that Twilio says was made to TWILIO_PHONE_NUMBER (another number on the
  same account, or a call Twilio does not know, is left alone). That call's row and caller
  are made from Twilio's record, so the consultant has the number to call back.

The question keeps the recording's time (its place in the queue is by waiting time), the
caller's remembered language, and the topic of the explainer the caller asked from, replayed
from the keys the call's row holds up to the recording's start (Flow.topic_after); a call whose
row was made from Twilio's record has no keys, and its question no topic. Off in demo mode
(there is no Twilio), and without TWILIO_PHONE_NUMBER (nothing to tell our calls by).

With several worker machines each one's scheduler runs the job: each lists the recordings (a
page or two every 10 minutes), and the unique RecordingSid lets only one of them store a
recording; no lock is taken, so a worker killed mid-run can never stop the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from hotline.outbound_sms import close_twilio_client, make_twilio_client
from hotline.runtime import Runtime
from hotline.twilio_glue import CALL_SID, RECORDING_SID
from storage import calls, questions
from storage.db import unit_of_work
from storage.models import DOWNLOAD_STORED, Call
from storage.phones import normalise_phone
from storage.utc import ensure_utc

log = logging.getLogger(__name__)

GRACE = timedelta(minutes=10)
PAGE_SIZE = 1000  # Twilio's largest page
QUESTION_SOURCE = "RecordVerb"


@dataclass
class CatchUp:
    """What one catch-up found."""

    listed: int = 0  # question recordings in the window, ours or not
    added: list[str] = field(default_factory=list)  # RecordingSids stored by this run
    failed: list[str] = field(default_factory=list)  # could not be stored (the next run tries)
    not_ours: list[str] = field(default_factory=list)  # recordings of calls to another number
    # (recording id, RecordingSid) of those whose audio is still to be fetched
    to_fetch: list[tuple[int, str]] = field(default_factory=list)


def enabled(runtime: Runtime, hours: int | None = None) -> bool:
    """Whether catching up can run: a real Twilio account and number, and some hours."""
    settings = runtime.settings
    return ((hours or settings.recording_catchup_hours) > 0 and not settings.demo
            and bool(settings.twilio_account_sid) and our_number(runtime) is not None)


def our_number(runtime: Runtime) -> str | None:
    """The hotline's number as the catch-up matches calls by it (None: not a valid one)."""
    settings = runtime.settings
    return normalise_phone(settings.twilio_phone_number, settings.default_region)


def catch_up_recordings(runtime: Runtime, *, hours: int | None = None,
                        now: datetime | None = None, client: Client | None = None,
                        page_size: int = PAGE_SIZE) -> CatchUp:
    """Queue the question recordings of the last hours that no webhook stored (module doc).

    Raises TwilioException (or a requests error) when Twilio cannot list the recordings:
    nothing is written then, and the next run asks again. A call Twilio does not know (404) or
    made to another number is skipped, and this process does not ask about it again for two
    days; a call Twilio could not tell about this time (another error) puts its recordings in
    failed, and the next run asks again, while the other recordings are stored.
    """
    settings = runtime.settings
    now = (now or datetime.now(UTC)).astimezone(UTC)
    start = now - timedelta(hours=hours or settings.recording_catchup_hours)
    end = now - GRACE
    own_client = client is None
    client = client or make_twilio_client(settings)
    try:
        # Twilio's filter is by day: from midnight (UTC) of the window's first day, then exactly.
        day = datetime(start.year, start.month, start.day, tzinfo=UTC)
        listed = [
            r for r in client.recordings.list(date_created_after=day, page_size=page_size)
            if r.source == QUESTION_SOURCE and r.status == "completed"
            and r.date_created is not None and start <= r.date_created <= end
            and RECORDING_SID.fullmatch(r.sid or "") and CALL_SID.fullmatch(r.call_sid or "")
            and _seconds(r.duration) != 0
        ]
        outcome = CatchUp(listed=len(listed))
        with unit_of_work(runtime.sessions) as session:
            known = questions.known_recording_sids(session, [r.sid for r in listed])
            missing = [r for r in listed
                       if r.sid not in known and r.call_sid not in _NOT_OURS]
            known_calls = {r.call_sid for r in missing if calls.get_call(session, r.call_sid)}
        # Twilio is asked outside any transaction (SQLite's one writer never waits on the
        # network), and only about calls we have no row for.
        remote = _fetch_calls(client, {r.call_sid for r in missing} - known_calls, now)
    finally:
        if own_client:
            close_twilio_client(client)
    ours = our_number(runtime)
    for recording in missing:
        if recording.call_sid in remote:
            call = remote[recording.call_sid]
            if call is _UNANSWERED:
                outcome.failed.append(recording.sid)  # Twilio will be asked again next run
                continue
            if call is None or ours is None or normalise_phone(
                    call.to, settings.default_region) != ours:
                _NOT_OURS[recording.call_sid] = now
                outcome.not_ours.append(recording.sid)
                continue
        else:
            call = None
        try:
            recording_id, new, pending = _store(runtime, recording, call)
        except Exception:  # noqa: BLE001 - the database; the next run tries this one again
            log.exception("could not store recording %s found at Twilio", recording.sid)
            outcome.failed.append(recording.sid)
            continue
        if not new:
            continue  # a late webhook, or another worker's run, stored it meanwhile
        if pending:
            outcome.to_fetch.append((recording_id, recording.sid))
        outcome.added.append(recording.sid)
        log.warning("recording %s of call %s was not stored by any webhook: queued now",
                    recording.sid, recording.call_sid)
    return outcome


def _store(runtime: Runtime, recording: Any, call: Any | None) -> tuple[int, bool, bool]:
    """Store one recording's question (and its call, from Twilio's record, if we have none);
    return the recording's id, whether this stored it, and whether its audio is to be fetched."""
    settings = runtime.settings
    when: datetime = recording.date_created
    with unit_of_work(runtime.sessions) as session:
        if call is not None:
            # twilio's CallInstance keeps "from" (a keyword in Python) as _from.
            numbers = {"from_number": getattr(call, "_from", None) or "",
                       "to_number": call.to or "", "region": settings.default_region}
            calls.answer_call(session, call_sid=recording.call_sid,
                              now=call.start_time or when, **numbers)
            calls.update_call_status(
                session, call_sid=recording.call_sid, status=call.status or "completed",
                now=call.end_time or when, duration=_seconds(call.duration), **numbers)
        row = calls.get_call(session, recording.call_sid)
        caller = row.caller if row is not None else None
        topic = _topic(runtime, row, recording) if row is not None else None
        _question, stored, new = questions.record_question(
            session, recording_sid=recording.sid, call_sid=recording.call_sid,
            recording_url=_media_url(settings.twilio_api_url, recording),
            duration=_seconds(recording.duration),
            language=caller.language if caller is not None else None, topic=topic, now=when,
            pseudonym_key=runtime.pseudonym_key)
        if new:
            # Waiting since the recording's time, but just queued: not stale for the sweep.
            stored.updated_at = datetime.now(UTC)
        return stored.id, new, stored.download_state != DOWNLOAD_STORED


def _topic(runtime: Runtime, call: Call, recording: Any) -> str | None:
    """The topic the caller chose before this recording began, from the keys the call's row
    holds (none when Twilio's record made the row: no menu step reached us)."""
    # No menu step happens while the caller records: whether Twilio's date_created is the
    # recording's start or its end, the steps before it are the ones that led to it.
    began: datetime = recording.start_time or recording.date_created
    steps = []
    for entry in call.keys or ():
        try:
            pressed = ensure_utc(datetime.fromisoformat(entry["at"]))
        except (KeyError, TypeError, ValueError):  # not written by storage.calls.record_keys
            continue
        if pressed < began:
            steps.append((str(entry.get("node")), str(entry.get("digits") or "")))
    return runtime.flow.topic_after(steps)


# Calls Twilio said are not the hotline's (another number on the account, or unknown to
# Twilio), by CallSid, with when: a later run of this process does not ask about them again.
# Forgotten after a day longer than any window, so the memory stays small.
_NOT_OURS: dict[str, datetime] = {}
_NOT_OURS_KEPT = timedelta(days=2)
# A call Twilio could not tell us about this time (an error other than 404).
_UNANSWERED = object()


def _fetch_calls(client: Client, call_sids: set[str], now: datetime) -> dict[str, Any]:
    """Twilio's record of each call: None if Twilio does not know it, _UNANSWERED if asking
    failed (logged; one call's error does not hold up the other recordings)."""
    for sid, seen in list(_NOT_OURS.items()):
        if seen < now - _NOT_OURS_KEPT:
            del _NOT_OURS[sid]
    found: dict[str, Any] = {}
    for sid in sorted(call_sids):
        try:
            found[sid] = client.calls(sid).fetch()
        except TwilioRestException as error:
            if error.status == 404:
                found[sid] = None
            else:
                log.warning("Twilio could not say whose call %s is (%s): its recordings wait "
                            "for the next run", sid, error.status)
                found[sid] = _UNANSWERED
        except Exception:  # noqa: BLE001 - the network: the next run asks again
            log.exception("could not ask Twilio about call %s; its recordings wait", sid)
            found[sid] = _UNANSWERED
    return found


def _media_url(api_url: str, recording: Any) -> str:
    """The recording's audio: Twilio's media_url, else its resource URI without .json."""
    if recording.media_url:
        return str(recording.media_url)
    return api_url.rstrip("/") + str(recording.uri).removesuffix(".json")


def _seconds(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None

