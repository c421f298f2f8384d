"""Recordings Twilio holds and no webhook stored: found in Twilio's list and queued, once.

Twilio's REST API is the local stand-in (tests/twilio_api.py), reached through the twilio
client's own HTTP layer; the media host is the simulator's. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from hotline import jobs
from hotline.config import ConfigError, Settings
from hotline.recording_catchup import catch_up_recordings
from hotline.simulator import MediaServer, PhoneSimulator, Speak, new_sid
from storage import calls
from storage import questions as question_store
from storage.models import Call, Caller, Question, Recording
from storage.retention import pseudonym
from tests.support import CALLER, Twilio, call_form, run_cli, runtime
from tests.twilio_api import CALL_RECORDS, RECORDINGS, TwilioApi, twilio_error

HOTLINE = "+77000000000"
TO_LAWYER = ["2", "0"]  # Russian, then "ask a lawyer"


@pytest.fixture
def settings(settings: Settings, api: TwilioApi) -> Settings:
    return settings.override(twilio_api_url=api.url)


def stored(db) -> list[tuple[Question, Recording, str | None]]:
    """Every recording with its question and the number to call back."""
    with db() as session:
        return [(r.question, r, r.question.caller.phone if r.question.caller else None)
                for r in session.scalars(select(Recording)).all()]


def call_at(api: TwilioApi, hours_ago: float) -> str:
    """A call to the hotline that Twilio knows and we have no row for; return its sid."""
    call_sid = new_sid("CA")
    api.add_call(call_sid, CALLER, HOTLINE, datetime.now(UTC) - timedelta(hours=hours_ago))
    return call_sid


def recording_at(api: TwilioApi, media: MediaServer, wav: Path, call_sid: str,
                 created: datetime, **extra: str) -> str:
    """A recording at Twilio (listed, its audio on the media host); return its sid."""
    sid = new_sid("RE")
    api.add_recording(sid, call_sid, media.add(sid, wav), created, **extra)
    return sid


def test_a_question_both_webhooks_failed_to_store_is_caught_up_once(
    app: Flask, db, api: TwilioApi, media: MediaServer, phone: PhoneSimulator,
    twilio: Twilio, question_wav: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_down(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("INSERT", {}, Exception("the database is restarting"))

    with monkeypatch.context() as patched:
        patched.setattr(question_store, "record_question", database_down)
        log = phone.call([*TO_LAWYER, Speak(question_wav)])
    # The status callback said 503, and Twilio (by default) does not send it again.
    assert any(url.startswith("https://hotline.test/voice/recording-status") and code == 503
               for url, code in log.statuses), log.statuses
    assert stored(db) == []
    # The caller heard the promise (the catch-up keeps it), not an apology that would have
    # them record the same question again.
    flow = runtime(app).flow
    promise = flow.prompt("ru", "record.done").text
    assert promise in log.texts()
    assert flow.prompt("ru", "error.apology").text not in log.texts()
    assert len(log.recordings) == 1
    [sid] = log.recordings
    asked = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=11)
    api.add_recording(sid, log.call_sid, media.add(sid, question_wav), asked,
                      duration="4")

    assert jobs.catch_up_recordings_job.call_local() == 1  # the download: inline
    [(question, recording, number)] = stored(db)
    assert recording.recording_sid == sid and recording.download_state == "stored"
    assert (runtime(app).settings.audio_dir / recording.file_path).read_bytes() == (
        question_wav.read_bytes())
    assert number == CALLER  # the consultant can call back
    assert (question.language, question.topic, question.status) == ("ru", None, "waiting")
    assert question.created_at.replace(tzinfo=UTC) == asked  # its place in the queue

    # The next run, and Twilio's status callback arriving late after all: nothing twice.
    assert jobs.catch_up_recordings_job.call_local() == 0
    late = twilio.post("/voice/recording-status", call_form(
        log.call_sid, RecordingSid=sid, RecordingUrl=media.add(sid, question_wav),
        RecordingDuration="4", RecordingStatus="completed"))
    assert late.status_code == 204
    assert len(stored(db)) == 1 and media.hits(sid) == 1


def test_a_recording_of_a_call_we_never_heard_of_gets_its_caller_from_twilio(
    app: Flask, db, api: TwilioApi, media: MediaServer, question_wav: Path
) -> None:
    call_sid = new_sid("CA")  # the incoming webhook was lost too: no row for the call
    asked = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    started = asked - timedelta(minutes=1)
    api.add_call(call_sid, CALLER, HOTLINE, started, duration="90")
    sid = recording_at(api, media, question_wav, call_sid, asked)

    result = run_cli(app, ["recordings", "catch-up", "--hours", "3"])
    assert result.exit_code == 0, result.output
    assert f"{sid}: stored" in result.output
    [(question, recording, number)] = stored(db)
    assert number == CALLER and recording.download_state == "stored"
    with db() as session:
        call = session.scalars(select(Call)).one()
        assert (call.call_sid, call.from_number, call.status) == (call_sid, CALLER, "completed")
        assert question.call_id == call.id
        assert (call.started_at.replace(tzinfo=UTC), call.ended_at.replace(tzinfo=UTC),
                call.duration) == (started, started + timedelta(seconds=90), 90)


def test_a_caught_up_question_gets_the_topic_the_caller_chose_before_it(
    app: Flask, db, api: TwilioApi, media: MediaServer, question_wav: Path
) -> None:
    # One call, two questions, both lost by the webhooks; the menu steps reached us.
    call_sid = new_sid("CA")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    steps = [("language", "2"), ("main", "1"), ("pension", "2"),  # pensions: ask a lawyer
             ("done", "0"), ("main", "4"), ("documents", "2")]  # again: documents
    with db() as session:
        calls.answer_call(session, call_sid=call_sid, from_number=CALLER, to_number=HOTLINE,
                          now=start)
        for minute, (node, digits) in enumerate(steps):
            calls.record_keys(session, call_sid, node, digits, start + timedelta(minutes=minute))
        session.commit()
    # Each recording begins a few seconds after the key that asked for it (the beep before).
    first = recording_at(api, media, question_wav, call_sid,
                         start + timedelta(minutes=2, seconds=40), duration="30")
    second = recording_at(api, media, question_wav, call_sid,
                          start + timedelta(minutes=5, seconds=40), duration="30")
    unknown = recording_at(api, media, question_wav, call_at(api, 1), start)

    caught = catch_up_recordings(runtime(app))
    assert sorted(caught.added) == sorted([first, second, unknown])
    topics = {r.recording_sid: q.topic for q, r, _number in stored(db)}
    # The call Twilio's record made has no menu steps, so no topic.
    assert topics == {first: "pension", second: "documents", unknown: None}


def test_only_this_hotlines_finished_questions_in_the_window_are_taken(
    app: Flask, db, api: TwilioApi, media: MediaServer, question_wav: Path
) -> None:
    # 03:00 UTC today: the window begins yesterday, so Twilio's filter (by day) must reach
    # back over midnight.
    now = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0)
    ours, elsewhere, unknown = new_sid("CA"), new_sid("CA"), new_sid("CA")
    api.add_call(ours, CALLER, HOTLINE, now - timedelta(days=1))
    api.add_call(elsewhere, CALLER, "+77010000000", now - timedelta(hours=1))
    wanted = [recording_at(api, media, question_wav, ours, now - timedelta(hours=hours))
              for hours in (23, 12, 6, 1, 0.2)]  # read by pages of two
    other_number = recording_at(api, media, question_wav, elsewhere, now - timedelta(hours=1))
    for call_sid, created, extra in [
        (ours, now - timedelta(hours=1), {"source": "DialVerb"}),  # a bridged callback
        (ours, now - timedelta(hours=1), {"duration": "0"}),
        (ours, now - timedelta(hours=1), {"status": "processing"}),
        (ours, now - timedelta(minutes=5), {}),  # the webhooks' turn still
        (ours, now - timedelta(hours=25), {}),  # out of the window
    ]:
        recording_at(api, media, question_wav, call_sid, created, **extra)
    # A call Twilio does not know (404): nobody's to call back, left alone too.
    no_call = recording_at(api, media, question_wav, unknown, now - timedelta(hours=1))

    outcome = catch_up_recordings(runtime(app), now=now, page_size=2)
    assert sorted(outcome.added) == sorted(wanted)
    assert sorted(outcome.not_ours) == sorted([other_number, no_call])
    assert outcome.listed == 7 and outcome.failed == []
    [listing] = [r for r in api.requests if r.path.split("?")[0].endswith("/Recordings.json")
                 and "Page=" not in r.path]
    yesterday = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    assert f"DateCreated%3E={yesterday}T00%3A00%3A00Z" in listing.path, listing.path
    with db() as session:
        # Waiting since their recordings' times, but just queued: the sweep leaves them to the
        # job this run queued (the function alone queues nothing; the job does).
        assert question_store.recordings_to_fetch(
            session, datetime.now(UTC) - timedelta(seconds=600)) == []
    assert sorted(r.recording_sid for _q, r, _n in stored(db)) == sorted(wanted)
    assert {number for _q, _r, number in stored(db)} == {CALLER}
    # One caller, one call: the five questions share them.
    with db() as session:
        assert len(session.scalars(select(Call)).all()) == 1


def test_when_twilio_cannot_be_asked_nothing_is_written_and_the_next_run_stores_it(
    app: Flask, db, api: TwilioApi, media: MediaServer, question_wav: Path
) -> None:
    call_sid = call_at(api, hours_ago=1)
    sid = recording_at(api, media, question_wav, call_sid,
                       datetime.now(UTC) - timedelta(minutes=30))
    api.fail_next(twilio_error(500, 20500, "Internal Server Error"), resource=RECORDINGS)
    assert jobs.catch_up_recordings_job.call_local() == 0
    assert stored(db) == []
    assert jobs.catch_up_recordings_job.call_local() == 1
    [(_question, recording, _number)] = stored(db)
    assert recording.recording_sid == sid and recording.download_state == "stored"


def test_a_listed_recording_on_another_host_is_refused_never_fetched(
    app: Flask, db, api: TwilioApi, media: MediaServer, question_wav: Path
) -> None:
    """The list is Twilio's, but its media URLs pass the same allow-list as a webhook's."""
    call_sid = call_at(api, hours_ago=1)
    sid = new_sid("RE")
    media.add(sid, question_wav)
    api.add_recording(sid, call_sid, f"http://127.0.0.2:{media.host.split(':')[1]}/x/{sid}",
                      datetime.now(UTC) - timedelta(minutes=30))
    assert jobs.catch_up_recordings_job.call_local() == 1
    [(question, recording, number)] = stored(db)
    assert recording.download_state == "refused" and media.hits(sid) == 0
    assert number == CALLER and question.status == "waiting"  # kept, for a lawyer to see


def test_one_recording_that_cannot_be_stored_does_not_hold_up_the_others(
    app: Flask, db, api: TwilioApi, media: MediaServer, question_wav: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    call_sid = call_at(api, hours_ago=3)
    first, second = (recording_at(api, media, question_wav, call_sid,
                                  datetime.now(UTC) - timedelta(hours=hours)) for hours in (2, 1))
    record = question_store.record_question

    def refuse_the_first(session, **fields):  # type: ignore[no-untyped-def]
        if fields["recording_sid"] == first:
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))
        return record(session, **fields)

    monkeypatch.setattr(question_store, "record_question", refuse_the_first)
    outcome = catch_up_recordings(runtime(app))
    assert (outcome.added, outcome.failed) == ([second], [first])
    monkeypatch.setattr(question_store, "record_question", record)
    assert catch_up_recordings(runtime(app)).added == [first]  # the next run
    assert len(stored(db)) == 2


def test_a_call_twilio_cannot_tell_about_holds_up_only_its_own_recordings(
    app: Flask, db, api: TwilioApi, media: MediaServer, question_wav: Path
) -> None:
    first_call, second_call = call_at(api, hours_ago=2), call_at(api, hours_ago=1)
    # Calls are asked about in CallSid order: the first asked gets Twilio's 503.
    troubled, fine = sorted([first_call, second_call])
    lost = recording_at(api, media, question_wav, troubled,
                        datetime.now(UTC) - timedelta(minutes=40))
    stored_now = recording_at(api, media, question_wav, fine,
                              datetime.now(UTC) - timedelta(minutes=30))
    api.fail_next(twilio_error(503, 20503, "Service Unavailable"), resource=CALL_RECORDS)
    outcome = catch_up_recordings(runtime(app))
    assert (outcome.added, outcome.failed, outcome.not_ours) == ([stored_now], [lost], [])
    assert catch_up_recordings(runtime(app)).added == [lost]  # the next run asks again
    assert sorted(r.recording_sid for _q, r, _n in stored(db)) == sorted([lost, stored_now])


def test_a_call_on_another_number_is_asked_about_once(
    app: Flask, db, api: TwilioApi, media: MediaServer, question_wav: Path
) -> None:
    elsewhere = new_sid("CA")
    api.add_call(elsewhere, CALLER, "+77010000000", datetime.now(UTC) - timedelta(hours=1))
    sid = recording_at(api, media, question_wav, elsewhere,
                       datetime.now(UTC) - timedelta(minutes=30))
    for _run in range(3):
        outcome = catch_up_recordings(runtime(app))
        assert (outcome.added, outcome.listed) == ([], 1)
    assert outcome.not_ours == []  # known by then, not even looked at
    asked = [r for r in api.requests if r.path.endswith(f"/Calls/{elsewhere}.json")]
    assert len(asked) == 1 and stored(db) == []
    assert [r["sid"] for r in api.recordings] == [sid]  # still at Twilio, not ours to take


def test_a_recording_a_webhook_stored_meanwhile_is_not_queued_twice(
    app: Flask, db, api: TwilioApi, media: MediaServer, question_wav: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    call_sid = call_at(api, hours_ago=1)
    sid = recording_at(api, media, question_wav, call_sid,
                       datetime.now(UTC) - timedelta(minutes=30))
    assert catch_up_recordings(runtime(app)).added == [sid]
    # Another run that listed it before that one stored it (another worker machine, or a
    # late webhook in between): it finds the row, and neither counts nor queues it again.
    monkeypatch.setattr(question_store, "known_recording_sids", lambda *_args: set())
    again = catch_up_recordings(runtime(app))
    assert (again.added, again.to_fetch, again.listed) == ([], [], 1)
    assert len(stored(db)) == 1


@pytest.mark.parametrize("change", [{"recording_catchup_hours": 0}, {"demo": True},
                                    {"twilio_phone_number": ""}])
def test_off_in_demo_mode_at_zero_hours_and_without_our_number(
    make_app, settings: Settings, api: TwilioApi, change: dict[str, object]
) -> None:
    app = make_app(settings.override(**change))
    assert jobs.catch_up_recordings_job.call_local() == 0
    result = run_cli(app, ["recordings", "catch-up"])
    assert result.exit_code == 1 and "nothing to catch up from" in result.output
    assert api.requests == []


def test_a_number_that_is_no_phone_number_is_said_at_start_and_by_the_command(
    make_app, settings: Settings, api: TwilioApi, caplog: pytest.LogCaptureFixture
) -> None:
    """The catch-up finds the hotline's calls by TWILIO_PHONE_NUMBER and is off without a valid
    one: the start says so at once (not silence every 10 minutes), and so does the command,
    naming the number rather than asking for a setting that is there."""
    app = make_app(settings.override(twilio_phone_number="+77171234"))
    assert any(r.getMessage().startswith("TWILIO_PHONE_NUMBER +77171234 is not a valid phone "
                                         "number: the recording catch-up is off")
               for r in caplog.records)
    assert jobs.catch_up_recordings_job.call_local() == 0
    result = run_cli(app, ["recordings", "catch-up"])
    assert result.exit_code == 1
    assert "TWILIO_PHONE_NUMBER +77171234 is not a valid phone number" in result.output
    assert api.requests == []


def test_the_command_says_when_twilio_cannot_be_asked(app: Flask, api: TwilioApi) -> None:
    api.fail_next(twilio_error(401, 20003, "Authenticate"), resource=RECORDINGS)
    result = run_cli(app, ["recordings", "catch-up", "--hours", "2"])
    assert result.exit_code == 1
    assert "could not list Twilio's recordings" in result.output


def test_a_negative_window_is_refused(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="HOTLINE_RECORDING_CATCHUP_HOURS"):
        settings.override(recording_catchup_hours=-1).check()


def test_a_caught_up_question_joins_the_residents_pseudonymised_record(
        app: Flask, db, api: TwilioApi, media: MediaServer, question_wav: Path) -> None:
    """The resident's number was pseudonymised (a year without contact); their new question
    is stored by the catch-up, not a webhook: joined to their earlier record all the same."""
    key = runtime(app).pseudonym_key
    with db() as session:
        earlier = Caller(phone=pseudonym(CALLER, key), sms_opted_out=True)
        session.add(earlier)
        session.flush()
        session.add(Question(caller_id=earlier.id, channel="voice", status="closed",
                             close_reason="resolved"))
        earlier_id = earlier.id
    call_sid = call_at(api, 2)
    recording_at(api, media, question_wav, call_sid, datetime.now(UTC) - timedelta(hours=2))
    assert run_cli(app, ["recordings", "catch-up", "--hours", "3"]).exit_code == 0
    with db() as session:
        assert session.get(Caller, earlier_id) is None
        [back] = session.scalars(select(Caller))
        assert back.phone == CALLER and back.sms_opted_out
        assert {q.caller_id for q in session.scalars(select(Question))} == {back.id}
