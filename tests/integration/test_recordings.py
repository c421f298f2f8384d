"""Storing a recorded question: callbacks in any order, the media-host allow-list, retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from hotline import recordings
from hotline.recordings import media_url_allowed
from hotline.simulator import MediaServer, PhoneSimulator, Speak, new_sid
from storage import questions
from storage.models import Question, Recording
from tests.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    Twilio,
    call_form,
    row_counts,
    run_cli,
    runtime,
    twiml,
)

TO_LAWYER = ["2", "0"]  # Russian, then "ask a lawyer" in the main menu


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """These run on SQLite; the end-to-end calls repeat the main path on PostgreSQL."""
    return f"sqlite:///{tmp_path / 'hotline.sqlite3'}"


def stored(app: Flask, db) -> list[tuple[Question, Recording, Path]]:
    with db() as session:
        rows = session.scalars(select(Recording)).all()
        audio = runtime(app).settings.audio_dir
        return [(r.question, r, audio / r.file_path if r.file_path else Path()) for r in rows]


@pytest.mark.parametrize("order", ["action-first", "status-first", "status-twice"])
def test_one_question_and_one_file_whatever_the_callback_order(
    app: Flask, db, phone: PhoneSimulator, media: MediaServer, question_wav: Path, order
) -> None:
    phone.callback_order = order
    log = phone.call([*TO_LAWYER, Speak(question_wav)])
    [(question, recording, path)] = stored(app, db)
    assert recording.recording_sid == log.recordings[0]
    assert (question.channel, question.language, question.status) == ("voice", "ru", "waiting")
    assert recording.download_state == "stored"
    assert path.read_bytes() == question_wav.read_bytes()
    assert media.hits(recording.recording_sid) == 1  # the second callback fetched nothing
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no stray partial files


def test_the_caller_hears_the_callback_promise(app: Flask, phone: PhoneSimulator,
                                               question_wav: Path) -> None:
    log = phone.call([*TO_LAWYER, Speak(question_wav), ""])
    promise = runtime(app).flow.prompt("ru", "record.done").text
    assert promise in log.texts()
    assert log.texts()[-1] == runtime(app).flow.prompt("ru", "goodbye").text
    assert log.hung_up_by == "hotline"


def test_hanging_up_instead_of_hash_still_saves_the_question(
    app: Flask, db, phone: PhoneSimulator, question_wav: Path
) -> None:
    phone.call([*TO_LAWYER, Speak(question_wav, end="hangup")])
    [(question, recording, path)] = stored(app, db)
    assert recording.download_state == "stored" and path.is_file()


def test_saying_nothing_is_told_and_offered_again(app: Flask, db, phone: PhoneSimulator) -> None:
    log = phone.call([*TO_LAWYER, "", "0"])
    assert runtime(app).flow.prompt("ru", "record.empty").text in log.texts()
    with db() as session:
        assert row_counts(session)["questions"] == 0


def test_a_recording_on_another_host_is_refused_and_never_fetched(
    app: Flask, db, twilio: Twilio, question_wav: Path
) -> None:
    with MediaServer(ACCOUNT_SID, AUTH_TOKEN) as elsewhere:
        sid = new_sid("RE")
        url = elsewhere.add(sid, question_wav)
        form = call_form(RecordingSid=sid, RecordingUrl=url, RecordingDuration="9")
        twiml(twilio.post("/voice/recorded?lang=ru", form))
        assert elsewhere.requests == []
    [(question, recording, _)] = stored(app, db)
    assert recording.download_state == "refused"
    assert "not in TWILIO_MEDIA_HOSTS" in (recording.last_error or "")
    assert question.status == "waiting"  # never lost: it waits with its URL and the error


@pytest.mark.parametrize("url", [
    "http://api.twilio.com/2010-04-01/Recordings/RE1",  # Twilio's host, but not over https
    "https://api.twilio.com.evil.example/RE1",
    "https://user:pw@api.twilio.com/RE1",
    "ftp://api.twilio.com/RE1",
    "https://127.0.0.1:1/RE1",
    "not a url",
])
def test_media_host_allow_list_refuses_lookalikes(url: str) -> None:
    assert not media_url_allowed(url, ("api.twilio.com", "127.0.0.1:8123"))


def test_media_host_allow_list_accepts_listed_hosts() -> None:
    allowed = ("api.twilio.com", "127.0.0.1:8123")
    assert media_url_allowed("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
                             allowed)
    assert media_url_allowed("http://127.0.0.1:8123/RE1", allowed)


def test_a_download_that_fails_three_times_then_succeeds(
    app: Flask, db, phone: PhoneSimulator, media: MediaServer, question_wav: Path
) -> None:
    media.fail_next(404, 404, 503)
    phone.call([*TO_LAWYER, Speak(question_wav)])
    [(_, recording, path)] = stored(app, db)
    assert [status for _, status in media.requests] == [404, 404, 503, 200]
    assert recording.download_state == "stored" and path.is_file()


def test_a_download_that_keeps_failing_keeps_the_question_and_retry_fetches_it(
    app: Flask, db, phone: PhoneSimulator, media: MediaServer, question_wav: Path
) -> None:
    # Both callbacks start a download job of 4 attempts (download_attempts=4): all fail.
    media.fail_next(*[404] * 8)
    phone.call([*TO_LAWYER, Speak(question_wav)])
    [(question, recording, _)] = stored(app, db)
    assert recording.download_state == "failed"
    assert "404" in (recording.last_error or "")
    assert question.status == "waiting"

    queue = run_cli(app, ["queue"])
    assert "audio failed" in queue.output

    result = run_cli(app, ["recordings", "retry"])
    assert result.exit_code == 0, result.output
    [(_, recording, path)] = stored(app, db)
    assert recording.download_state == "stored" and path.read_bytes() == question_wav.read_bytes()
    assert run_cli(app, ["recordings", "retry"]).output.strip() == "nothing to fetch"


def test_wrong_credentials_are_not_retried(
    app: Flask, db, twilio: Twilio, media: MediaServer, question_wav: Path
) -> None:
    media.fail_next(401)
    sid = new_sid("RE")
    form = call_form(RecordingSid=sid, RecordingUrl=media.add(sid, question_wav))
    twiml(twilio.post("/voice/recorded?lang=ru", form))
    [(_, recording, _)] = stored(app, db)
    assert recording.download_state == "failed" and "401" in (recording.last_error or "")
    assert len(media.requests) == 1


def test_the_account_credentials_are_sent(
    app: Flask, db, phone: PhoneSimulator, media: MediaServer, question_wav: Path
) -> None:
    # The media server answers 401 unless the request carries the account SID and token.
    phone.call([*TO_LAWYER, Speak(question_wav)])
    assert [status for _, status in media.requests] == [200]


def test_something_that_is_not_a_wav_is_not_stored(
    app: Flask, db, media: MediaServer, twilio: Twilio, tmp_path: Path
) -> None:
    fake = tmp_path / "fake.wav"
    fake.write_bytes(b"<html>error page</html>")
    sid = new_sid("RE")
    url = media.add(sid, fake)
    twiml(twilio.post("/voice/recorded?lang=ru",
                           call_form(RecordingSid=sid, RecordingUrl=url, RecordingDuration="5")))
    [(question, recording, _)] = stored(app, db)
    # Refused, as a host off the list is: the same answer again is no better, so the sweep
    # does not fetch it twenty times; it waits for an operator (`recordings retry`).
    assert recording.download_state == "refused"
    assert "not send a WAV" in (recording.last_error or "")
    assert question.status == "waiting"
    with db() as session:
        later = datetime.now(UTC) + timedelta(hours=1)
        assert questions.recordings_to_fetch(session, later) == []


def test_a_wav_cut_short_is_not_stored_and_retry_fetches_it(
    app: Flask, db, media: MediaServer, twilio: Twilio, question_wav: Path, tmp_path: Path
) -> None:
    """A body that ended early (a connection closed with no Content-Length to tell) is shorter
    than its RIFF header says: not kept as the recording, but a download to try again."""
    whole = question_wav.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: len(whole) // 3])
    sid = new_sid("RE")
    twiml(twilio.post("/voice/recorded?lang=ru", call_form(
        RecordingSid=sid, RecordingUrl=media.add(sid, cut), RecordingDuration="5")))
    [(question, recording, _)] = stored(app, db)
    assert recording.download_state == "failed" and question.status == "waiting"
    assert f"cut short: {len(whole) // 3} of {len(whole)} bytes" in (recording.last_error or "")
    media.add(sid, question_wav)  # the whole recording, as Twilio keeps it
    assert run_cli(app, ["recordings", "retry"]).exit_code == 0
    [(_, recording, path)] = stored(app, db)
    assert recording.download_state == "stored" and path.read_bytes() == whole


@pytest.mark.parametrize("kind", ["folder", "database"])
def test_a_failed_duplicate_download_leaves_the_stored_audio_alone(
    make_app, settings, media: MediaServer, question_wav: Path, kind: str,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twilio's two webhooks each enqueue a download: one stores the audio while the other's
    fetch is still failing. The failure changes nothing: the recording stays stored."""
    app = make_app(settings.override(audio_store=kind))
    rt = runtime(app)
    sid = new_sid("RE")
    monkeypatch.setattr("hotline.jobs.download_recording_job", lambda _id: None)
    twiml(Twilio(app).post("/voice/recorded?lang=ru", call_form(
        RecordingSid=sid, RecordingUrl=media.add(sid, question_wav), RecordingDuration="5")))
    with rt.sessions() as session:
        recording_id = session.scalars(select(Recording.id)).one()
    fetch = recordings.fetch_to_file

    def the_other_job_stores_it_meanwhile(*args: object, **kwargs: object) -> None:
        monkeypatch.setattr(recordings, "fetch_to_file", fetch)
        assert recordings.download_recording(rt, recording_id) == "stored"
        raise recordings.DownloadError("gave up after 4 attempts: ReadTimeout")

    monkeypatch.setattr(recordings, "fetch_to_file", the_other_job_stores_it_meanwhile)
    assert recordings.download_recording(rt, recording_id) == "stored"
    with rt.sessions() as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None and recording.download_state == "stored"
        assert recording.last_error is None
        assert rt.audio.exists(recording.file_path or "", session=session)


def test_stored_audio_gone_missing_whose_fetch_fails_is_failed_for_retry(
    app: Flask, db, media: MediaServer, twilio: Twilio, question_wav: Path
) -> None:
    """A row says stored but its file is gone (a disk lost, a restore without audio/): the
    download fetches it again, and when that fails the row says so, for the sweep and
    `hotline recordings retry`, rather than "stored" with nothing to play."""
    sid = new_sid("RE")
    twiml(twilio.post("/voice/recorded?lang=ru", call_form(
        RecordingSid=sid, RecordingUrl=media.add(sid, question_wav), RecordingDuration="5")))
    [(_, recording, path)] = stored(app, db)
    assert recording.download_state == "stored"
    path.unlink()
    media.fail_next(*[404] * 4)
    assert recordings.download_recording(runtime(app), recording.id) == "failed"
    assert run_cli(app, ["recordings", "retry"]).exit_code == 0
    [(_, recording, path)] = stored(app, db)
    assert recording.download_state == "stored" and path.read_bytes() == question_wav.read_bytes()


def test_a_wav_one_pad_byte_short_is_stored(
    app: Flask, db, media: MediaServer, twilio: Twilio, question_wav: Path, tmp_path: Path
) -> None:
    """Some writers count the pad byte of an odd-sized chunk in the RIFF size but do not
    write it: one byte short is a whole recording."""
    data = bytearray(question_wav.read_bytes())
    data[4:8] = (int.from_bytes(data[4:8], "little") + 1).to_bytes(4, "little")
    padded = tmp_path / "padded.wav"
    padded.write_bytes(bytes(data))
    sid = new_sid("RE")
    twiml(twilio.post("/voice/recorded?lang=ru", call_form(
        RecordingSid=sid, RecordingUrl=media.add(sid, padded), RecordingDuration="5")))
    [(_, recording, _)] = stored(app, db)
    assert recording.download_state == "stored"


def test_audio_retention_deleted_is_not_fetched_again(
    app: Flask, db, media: MediaServer, twilio: Twilio, question_wav: Path
) -> None:
    """A late duplicate job for a recording whose audio retention deleted fetches nothing."""
    sid = new_sid("RE")
    twiml(twilio.post("/voice/recorded?lang=ru", call_form(
        RecordingSid=sid, RecordingUrl=media.add(sid, question_wav), RecordingDuration="5")))
    with db() as session:
        recording = session.scalars(select(Recording)).one()
        recording.download_state, recording.file_path = "deleted", None
        recording_id = recording.id
    fetched = len(media.requests)
    assert recordings.download_recording(runtime(app), recording_id) == "deleted"
    assert len(media.requests) == fetched


def test_a_malformed_recording_sid_gets_400_and_writes_nothing(twilio: Twilio, db) -> None:
    form = call_form(RecordingSid="RE../../etc/passwd", RecordingUrl="https://api.twilio.com/x",
                     RecordingDuration="5")
    assert twilio.post("/voice/recorded?lang=ru", form).status_code == 400
    with db() as session:
        assert row_counts(session)["recordings"] == 0
