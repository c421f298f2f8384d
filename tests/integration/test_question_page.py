"""A question's page: audio with Range, transcript marking and correction, caller history,
notes, tags, quick close, claims and their audit events; for each role and a logged-out visitor."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text
from werkzeug.test import TestResponse

from hotline.config import Settings
from storage import audit
from storage.models import (
    CHANNEL_SMS,
    CHANNEL_VOICE,
    DOWNLOAD_PENDING,
    DOWNLOAD_STORED,
    QUESTION_CLAIMED,
    QUESTION_CLOSED,
    QUESTION_WAITING,
    SMS_IN,
    SMS_OUT,
    AuditEvent,
    Call,
    Caller,
    Note,
    Question,
    Recording,
    SmsMessage,
    Transcript,
    User,
)
from storage.retention import RECORDING_DELETED
from storage.transcripts import save_transcript
from tests.support import make_wav
from tests.workspace_support import Browser, Db, page

PHONE = "+77017654321"
RECEIVED = datetime(2026, 3, 2, 4, 30, tzinfo=UTC)  # 09:30 in Almaty
AUDIO = bytes(range(256)) * 16  # 4096 bytes, each position recognisable
WORDS = [
    {"word": "мне", "start": 0.1, "end": 0.3, "conf": 0.97},
    {"word": "шестьдесят", "start": 0.3, "end": 0.9, "conf": 0.42},
    {"word": "лет", "start": 0.9, "end": 1.1, "conf": 0.6},
    {"word": "пенсия", "start": 1.1, "end": 1.6, "conf": 0.59},
]
TRANSCRIPT = "мне шестьдесят лет пенсия"


def _voice_question(db: Db, settings: Settings, *, file_path: str | None = "recordings/q.wav",
                    state: str = DOWNLOAD_STORED, audio: bytes = AUDIO,
                    transcript: bool = True, **changes: Any) -> int:
    """A recorded question from PHONE with its audio stored under the audio folder."""
    if file_path and state == DOWNLOAD_STORED and not os.path.isabs(file_path) \
            and ".." not in file_path:
        target = settings.audio_dir / file_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(audio)
    with db() as session:
        caller = session.scalars(select(Caller).where(Caller.phone == PHONE)).one_or_none()
        if caller is None:
            caller = Caller(phone=PHONE, language="ru")
            session.add(caller)
            session.flush()
        call = Call(call_sid=f"CA{os.urandom(8).hex()}", caller_id=caller.id, from_number=PHONE,
                    to_number="+77000000000", status="completed", started_at=RECEIVED,
                    duration=95, last_node="pension")
        session.add(call)
        session.flush()
        values: dict[str, Any] = {"channel": CHANNEL_VOICE, "language": "ru", "topic": "pension",
                                  "caller_id": caller.id, "call_id": call.id,
                                  "created_at": RECEIVED, "priority_at": RECEIVED,
                                  "transcription_state": "done" if transcript else "pending"}
        values.update(changes)
        question = Question(**values)
        session.add(question)
        session.flush()
        session.add(Recording(recording_sid=f"RE{os.urandom(8).hex()}", question_id=question.id,
                              call_sid=call.call_sid, duration=5,
                              source_url="https://api.twilio.com/rec", file_path=file_path,
                              download_state=state))
        if transcript:
            session.add(Transcript(question_id=question.id, language="ru", model="vosk-ru",
                                   text=TRANSCRIPT, words=WORDS, confidence=0.65, duration=1.6,
                                   elapsed=0.2))
        return question.id


def _sms_question(db: Db, text: str = "Когда мне назначат пенсию?") -> int:
    with db() as session:
        caller = Caller(phone=PHONE, language="ru")
        session.add(caller)
        session.flush()
        question = Question(channel=CHANNEL_SMS, language="ru", caller_id=caller.id, text=text,
                            created_at=RECEIVED, priority_at=RECEIVED)
        session.add(question)
        session.flush()
        session.add(SmsMessage(message_sid="SM1", direction=SMS_IN, caller_id=caller.id,
                               phone=PHONE, body=text, status="received",
                               question_id=question.id, created_at=RECEIVED))
        return question.id


def _logged_in(app: Flask, email: str) -> Browser:
    browser = Browser(app)
    assert browser.login(email).status_code == 302
    return browser


def _token(browser: Browser) -> str:
    return browser.token("/queue")


def _claim(browser: Browser, question_id: int) -> None:
    response = browser.post(f"/questions/{question_id}/claim", {"csrf_token": _token(browser)})
    assert response.status_code in (302, 303), response.get_data(as_text=True)


def _audio(browser: Browser, url: str, byte_range: str | None = None) -> TestResponse:
    """GET the audio, read it whole and close the file behind it."""
    response = browser.get(url, headers={"Range": byte_range} if byte_range else None)
    response.get_data()
    response.close()
    return response


def _user_id(db: Db, email: str) -> int:
    with db() as session:
        return session.scalars(select(User.id).where(User.email == email)).one()


def _events(db: Db, question_id: int, action: str | None = None) -> list[AuditEvent]:
    with db() as session:
        statement = select(AuditEvent).where(AuditEvent.question_id == question_id)
        if action:
            statement = statement.where(AuditEvent.action == action)
        return list(session.scalars(statement.order_by(AuditEvent.id)))


def _question(db: Db, question_id: int) -> Question:
    with db() as session:
        found = session.get(Question, question_id)
        assert found is not None
        return found


# -- logged out ------------------------------------------------------------------------------

def test_a_logged_out_visitor_gets_nothing(app: Flask, db: Db, settings: Settings) -> None:
    question_id = _voice_question(db, settings)
    browser = Browser(app)
    for path in (f"/questions/{question_id}", f"/questions/{question_id}/audio"):
        response = browser.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"] == "/login"
        assert AUDIO not in response.get_data()
    ranged = browser.get(f"/questions/{question_id}/audio", headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 302
    token = browser.token()
    for action in ("release", "transcript", "notes", "tags", "close"):
        response = browser.post(f"/questions/{question_id}/{action}",
                                {"csrf_token": token, "reason": "silence", "body": "x"})
        assert response.status_code == 302, action
        assert response.headers["Location"] == "/login"
    assert _events(db, question_id) == []
    assert _question(db, question_id).status == QUESTION_WAITING


# -- the page --------------------------------------------------------------------------------

def test_a_consultant_opens_a_question(app: Flask, db: Db, settings: Settings,
                                       consultant: str) -> None:
    question_id = _voice_question(db, settings)
    browser = _logged_in(app, consultant)
    response = browser.get(f"/questions/{question_id}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    parsed = page(response)
    assert parsed.headings == [f"Question {question_id}"]
    assert "Claim" in parsed.buttons and "Release" not in parsed.buttons
    assert "2026-03-02 09:30" in html  # Almaty
    assert "Русский" in html and "Call" in html and "waiting" in html
    assert (f'<audio id="question-audio" controls preload="none" '
            f'src="/questions/{question_id}/audio">') in html
    # Not the holder: no forms to change it.
    assert "corrected_text" not in parsed.inputs and 'name="corrected_text"' not in html
    assert "Claim the question to correct the transcript" in html
    # Opening is audited once, however often the page is reloaded within a few minutes.
    browser.get(f"/questions/{question_id}")
    opened = _events(db, question_id, audit.OPENED)
    assert [(e.user_id, e.detail) for e in opened] == [(_user_id(db, consultant), {})]
    assert opened[0].ip == "203.0.113.7"


@pytest.mark.parametrize(("language", "unknown"), [("en", "unknown"), ("ru", "неизвестен"),
                                                  ("kk", "белгісіз")])
def test_a_question_in_no_chosen_language_says_so_as_the_queue_does(
        app: Flask, db: Db, settings: Settings, consultant: str, language: str,
        unknown: str) -> None:
    """The caller never chose a language: the question's page names it as the queue's row
    does, in the page's language (it showed a bare dash)."""
    question_id = _voice_question(db, settings, language=None)
    browser = Browser(app, language=language)
    assert browser.login(consultant).status_code == 302
    html = browser.get(f"/questions/{question_id}").get_data(as_text=True)
    assert re.search(rf"<dd>{unknown}</dd>", html)
    queue = browser.get("/queue?status=all").get_data(as_text=True)
    assert unknown in queue


def test_an_unknown_question_is_404(app: Flask, consultant: str) -> None:
    browser = _logged_in(app, consultant)
    assert browser.get("/questions/999").status_code == 404
    assert browser.get("/questions/999/audio").status_code == 404


def test_a_coordinator_opens_a_question_and_its_audit_log(app: Flask, db: Db, settings: Settings,
                                                          coordinator: str) -> None:
    question_id = _voice_question(db, settings)
    browser = _logged_in(app, coordinator)
    response = browser.get(f"/questions/{question_id}")
    assert response.status_code == 200
    assert f"/admin/audit?question={question_id}" in page(response).links
    assert _audio(browser, f"/questions/{question_id}/audio").status_code == 200


def test_words_the_recogniser_was_unsure_of_are_marked(app: Flask, db: Db, settings: Settings,
                                                       consultant: str) -> None:
    question_id = _voice_question(db, settings)
    shown = _logged_in(app, consultant).get(f"/questions/{question_id}")
    html = shown.get_data(as_text=True)
    assert ('мне <mark class="unsure" title="confidence 42%">шестьдесят<span '
            'class="visually-hidden"> (confidence 42%)</span></mark> лет '
            '<mark class="unsure" title="confidence 59%">пенсия<span '
            'class="visually-hidden"> (confidence 59%)</span></mark>') in html
    # A screen reader hears the confidence too (a title is a mouse's tooltip only).
    assert {"(confidence 42%)", "(confidence 59%)"} <= set(page(shown).hidden_texts)
    russian = _logged_in(app, consultant).get(f"/questions/{question_id}?lang=ru")
    assert 'title="уверенность 42%"' in russian.get_data(as_text=True)
    assert "(уверенность 42%)" in page(russian).hidden_texts


def test_without_a_transcript_the_page_says_where_transcription_stands(
        app: Flask, db: Db, settings: Settings, consultant: str) -> None:
    question_id = _voice_question(db, settings, transcript=False)
    html = _logged_in(app, consultant).get(f"/questions/{question_id}").get_data(as_text=True)
    assert "Transcription: waiting" in html


def test_a_transcript_that_recognised_nothing_says_to_listen(
        app: Flask, db: Db, settings: Settings, consultant: str) -> None:
    question_id = _voice_question(db, settings, transcript=False)
    with db() as session:
        save_transcript(session, question_id, language="ru", model="vosk-model-ru", text="",
                        words=[], confidence=0.0, duration=3.0, elapsed=1.0,
                        now=datetime.now(UTC))
    html = _logged_in(app, consultant).get(f"/questions/{question_id}").get_data(as_text=True)
    assert ('<p class="hint" id="nothing-recognised">No words recognised: listen to the '
            'recording</p>') in html
    assert '<p class="transcript"' not in html
    # Once the recording is deleted (retention), there is nothing to listen to.
    gone = _voice_question(db, settings, file_path=None, state=RECORDING_DELETED,
                           transcript=False)
    with db() as session:
        save_transcript(session, gone, language="ru", model="vosk-model-ru", text="",
                        words=[], confidence=0.0, duration=3.0, elapsed=1.0,
                        now=datetime.now(UTC))
    html = _logged_in(app, consultant).get(f"/questions/{gone}").get_data(as_text=True)
    assert '<p class="hint" id="nothing-recognised">No words recognised</p>' in html


@pytest.mark.parametrize(("language", "said"), [
    ("en", "Not transcribed (no speech model here): listen to the recording (1:35)"),
    ("ru", "Не расшифровано (здесь нет речевой модели): прослушайте запись (1:35)"),
    ("kk", "Мәтінге айналдырылмады (мұнда сөйлеу моделі жоқ): жазбаны тыңдаңыз (1:35)"),
])
def test_without_a_speech_model_the_page_sends_the_lawyer_to_the_recording(
        app: Flask, db: Db, settings: Settings, consultant: str, language: str,
        said: str) -> None:
    question_id = _voice_question(db, settings, transcript=False, transcription_state="no_model")
    with db() as session:
        recording = session.scalars(select(Recording).where(
            Recording.question_id == question_id)).one()
        recording.duration = 95
    browser = Browser(app, language=language)
    assert browser.login(consultant).status_code == 302
    html = browser.get(f"/questions/{question_id}").get_data(as_text=True)
    assert f'<p class="hint" id="no-speech-model">{said}</p>' in html
    assert "no model" not in html and "модел" not in html.replace(said, "")


def test_an_sms_question_shows_what_the_resident_wrote(app: Flask, db: Db,
                                                       consultant: str) -> None:
    question_id = _sms_question(db, "Когда мне назначат <пенсию>?")
    response = _logged_in(app, consultant).get(f"/questions/{question_id}")
    html = response.get_data(as_text=True)
    assert "What the resident wrote" in html
    assert "Когда мне назначат &lt;пенсию&gt;?" in html
    assert "question-audio" not in html and 'id="transcript"' not in html


def test_the_page_shows_the_callers_history(app: Flask, db: Db, settings: Settings,
                                            consultant: str) -> None:
    earlier = _voice_question(db, settings, file_path="recordings/a.wav",
                              created_at=RECEIVED - timedelta(days=30))
    question_id = _voice_question(db, settings, file_path="recordings/b.wav")
    with db() as session:
        caller_id = session.scalars(select(Caller.id).where(Caller.phone == PHONE)).one()
        # A call that ended in the main menu (hung up before choosing).
        session.add(Call(call_sid="CAmain", caller_id=caller_id, from_number=PHONE,
                         started_at=RECEIVED - timedelta(days=2), duration=20, last_node="main"))
        session.add(SmsMessage(message_sid="SMout", direction=SMS_OUT, caller_id=caller_id,
                               phone=PHONE, body="Мы пытались вам позвонить.",
                               status="delivered", created_at=RECEIVED + timedelta(hours=1)))
        # Someone else's call and message stay out of this caller's history.
        other = Caller(phone="+77019999999")
        session.add(other)
        session.flush()
        session.add(Call(call_sid="CAother", caller_id=other.id, from_number=other.phone,
                         started_at=RECEIVED, last_node="disability"))
        session.add(SmsMessage(message_sid="SMother", direction=SMS_IN, caller_id=other.id,
                               phone=other.phone, body="чужое", status="received"))
    browser = _logged_in(app, consultant)
    response = browser.get(f"/questions/{question_id}")
    html = response.get_data(as_text=True)
    parsed = page(response)
    assert f"/questions/{earlier}" in parsed.links
    assert f"/questions/{question_id}" not in parsed.links  # not itself
    # The number to read, not to tap: a tel: link would call from the lawyer's own phone.
    assert PHONE in html and "tel:" not in html
    # Where each call ended, named as the reports name it, never the tree's own ids.
    assert ["2026-03-02 09:30", "1:35", "Explainer: Pensions"] in parsed.rows
    assert ["2026-02-28 09:30", "0:20", "Main menu"] in parsed.rows
    assert ["2026-03-02 10:30", "to the resident", "Мы пытались вам позвонить.",
            "delivered"] in parsed.rows
    # Twilio's status in the page's language, as on the callback panel.
    russian = page(browser.get(f"/questions/{question_id}?lang=ru"))
    assert ["2026-03-02 10:30", "жителю", "Мы пытались вам позвонить.",
            "доставлено"] in russian.rows
    assert ["2026-03-02 09:30", "1:35", "Разъяснение: Пенсия"] in russian.rows
    assert ["2026-02-28 09:30", "0:20", "Главное меню"] in russian.rows
    assert "чужое" not in html and "disability" not in html
    # The number is on the page, never in the audit log.
    assert all(PHONE not in str(e.detail) for e in _events(db, question_id))


# -- audio -----------------------------------------------------------------------------------

def test_the_audio_is_served_with_range(app: Flask, db: Db, settings: Settings,
                                        consultant: str) -> None:
    question_id = _voice_question(db, settings)
    browser = _logged_in(app, consultant)
    url = f"/questions/{question_id}/audio"
    whole = _audio(browser, url)
    assert whole.status_code == 200
    assert whole.get_data() == AUDIO
    assert whole.mimetype == "audio/wav"
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["Cache-Control"] == "no-store"
    part = _audio(browser, url, "bytes=100-199")
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(AUDIO)}"
    assert part.get_data() == AUDIO[100:200]
    tail = _audio(browser, url, "bytes=4000-")
    assert tail.status_code == 206 and tail.get_data() == AUDIO[4000:]
    beyond = _audio(browser, url, f"bytes={len(AUDIO) + 10}-")
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(AUDIO)}"


def test_listening_is_audited_once_per_listening(app: Flask, db: Db, settings: Settings,
                                                 consultant: str, coordinator: str) -> None:
    question_id = _voice_question(db, settings)
    url = f"/questions/{question_id}/audio"
    lawyer = _logged_in(app, consultant)
    # A player starts at byte 0 (metadata, then playing), then seeks: one listening.
    _audio(lawyer, url, "bytes=0-")
    _audio(lawyer, url, "bytes=0-")
    _audio(lawyer, url, "bytes=2000-")
    assert [e.user_id for e in _events(db, question_id, audit.LISTENED)] == [
        _user_id(db, consultant)]
    # Any fetch past the window is one more, a seek included: a range from byte 1 is the
    # whole recording but its first byte ("R"), and fetched so it wrote nothing (a
    # consultant could take every resident's voice without a trace).
    with db() as session:
        for event in session.scalars(select(AuditEvent)):
            event.at -= timedelta(hours=1)
    _audio(lawyer, url, "bytes=1-")
    _audio(lawyer, url, "bytes=2000-")
    assert len(_events(db, question_id, audit.LISTENED)) == 2
    # Another user: a new event.
    _audio(_logged_in(app, coordinator), url, "bytes=1-")
    assert [e.user_id for e in _events(db, question_id, audit.LISTENED)] == [
        _user_id(db, consultant), _user_id(db, consultant), _user_id(db, coordinator)]


def test_real_audio_plays_from_the_page(app: Flask, db: Db, settings: Settings, tmp_path: Path,
                                        consultant: str) -> None:
    wav = make_wav(tmp_path / "question.wav", "Когда мне назначат пенсию?")
    question_id = _voice_question(db, settings, audio=wav.read_bytes())
    response = _audio(_logged_in(app, consultant), f"/questions/{question_id}/audio",
                      "bytes=0-11")
    assert response.status_code == 206
    assert response.get_data()[:4] == b"RIFF" and response.get_data()[8:12] == b"WAVE"


def test_audio_not_downloaded_yet(app: Flask, db: Db, settings: Settings,
                                  consultant: str) -> None:
    question_id = _voice_question(db, settings, file_path=None, state=DOWNLOAD_PENDING)
    browser = _logged_in(app, consultant)
    assert browser.get(f"/questions/{question_id}/audio").status_code == 404
    html = browser.get(f"/questions/{question_id}").get_data(as_text=True)
    assert "question-audio" not in html
    assert "The recording is still being fetched." in html
    assert _events(db, question_id, audit.LISTENED) == []


def test_audio_deleted_by_retention_says_so(app: Flask, db: Db, settings: Settings,
                                            consultant: str) -> None:
    question_id = _voice_question(db, settings, file_path=None, state=RECORDING_DELETED,
                                  status=QUESTION_CLOSED, closed_at=RECEIVED,
                                  close_reason="resolved")
    with db() as session:
        recording = session.scalars(select(Recording).where(
            Recording.question_id == question_id)).one()
        recording.updated_at = RECEIVED + timedelta(days=91)
    browser = _logged_in(app, consultant)
    assert browser.get(f"/questions/{question_id}/audio").status_code == 404

    def shown(lang: str) -> str:
        html = browser.get(f"/questions/{question_id}?lang={lang}").get_data(as_text=True)
        assert "audio-pending" not in html and "question-audio" not in html
        assert ">шестьдесят<" in html  # the transcript stays
        found = re.search(r'<p class="hint" id="audio-deleted">([^<]*)</p>', html)
        assert found is not None, html
        return found.group(1)

    days = settings.audio_retention_days
    assert shown("en") == ("The recording was deleted on 2026-06-01 09:30 (Almaty): the "
                           "retention rule keeps the audio of a closed question for "
                           f"{days} days.")
    assert shown("ru") == ("Запись удалена 2026-06-01 09:30 (время Алматы): по правилу "
                           f"хранения аудио закрытого вопроса хранится {days} дн.")
    assert shown("kk") == ("Жазба 2026-06-01 09:30 (Алматы уақыты) өшірілді: сақтау ережесі "
                           f"бойынша жабылған сұрақтың аудиосы {days} күн сақталады.")


def test_a_stored_file_that_is_missing_is_404(app: Flask, db: Db, settings: Settings,
                                              consultant: str) -> None:
    question_id = _voice_question(db, settings)
    (settings.audio_dir / "recordings/q.wav").unlink()
    assert _logged_in(app, consultant).get(f"/questions/{question_id}/audio").status_code == 404


@pytest.mark.parametrize("tampered", ["../secret.wav", "recordings/../../secret.wav",
                                      "ABSOLUTE", "recordings/link.wav", "", "."])
def test_a_tampered_path_never_leaves_the_audio_folder(app: Flask, db: Db, settings: Settings,
                                                       consultant: str, tampered: str) -> None:
    secret = settings.data_dir / "secret.wav"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(b"SECRET" * 100)
    if tampered == "ABSOLUTE":
        tampered = str(secret)
    if tampered == "recordings/link.wav":
        link = settings.audio_dir / tampered
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(secret)
    question_id = _voice_question(db, settings, file_path=tampered)
    response = _audio(_logged_in(app, consultant), f"/questions/{question_id}/audio")
    assert response.status_code == 404
    assert b"SECRET" not in response.get_data()


# -- changing a question ---------------------------------------------------------------------

def test_changes_need_the_claim(app: Flask, db: Db, settings: Settings, consultant: str,
                                coordinator: str) -> None:
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    token = _token(lawyer)
    forms = {"release": {}, "transcript": {"corrected_text": "исправлено"},
             "notes": {"body": "заметка"}, "tags": {"region": "akmola"},
             "close": {"reason": "silence"}}
    for action, data in forms.items():
        response = lawyer.post(f"/questions/{question_id}/{action}", {"csrf_token": token, **data})
        assert response.status_code == 409, action
        assert f"Please claim question {question_id} before changing it." in \
            response.get_data(as_text=True)
    # Someone else's question: 409 naming the holder, with the note to copy; htmx is told to
    # show it in place of the page's main part.
    coordinator_browser = _logged_in(app, coordinator)
    _claim(coordinator_browser, question_id)
    response = lawyer.post(f"/questions/{question_id}/notes",
                           {"csrf_token": token, "body": "заметка"})
    assert response.status_code == 409
    refused = response.get_data(as_text=True)
    assert "being handled by Dana Coordinator" in refused
    assert '<textarea id="sms-draft" rows="8" readonly>заметка</textarea>' in refused
    htmx = lawyer.client.post(f"/questions/{question_id}/notes", base_url="https://hotline.test",
                              data={"csrf_token": token, "body": "заметка"},
                              headers={"HX-Request": "true", "Referer": "https://hotline.test/"})
    assert htmx.status_code == 409 and htmx.headers["HX-Retarget"] == "main"
    found = _question(db, question_id)
    assert (found.corrected_text, found.region, found.status) == (None, None, QUESTION_CLAIMED)
    with db() as session:
        assert session.scalars(select(Note)).all() == []
    assert {e.action for e in _events(db, question_id)} <= {audit.OPENED, audit.CLAIMED}


def test_a_question_someone_else_holds_says_who_rather_than_to_claim_it(
        app: Flask, db: Db, settings: Settings, consultant: str, coordinator: str) -> None:
    """The page invites a claim only where the viewer may claim; a question a colleague holds
    says who has it; once their claim has lapsed it may be claimed again, and says so."""
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    claim_hint = "Claim the question to correct the transcript, add notes, set tags or close it."
    assert claim_hint in lawyer.get(f"/questions/{question_id}").get_data(as_text=True)
    _claim(_logged_in(app, coordinator), question_id)
    response = lawyer.get(f"/questions/{question_id}")
    html = response.get_data(as_text=True)
    assert "Claim" not in page(response).buttons
    assert claim_hint not in html
    assert ('<p class="hint" id="held-by">Dana Coordinator is handling this question: only they '
            'can change it now.</p>') in html
    russian = lawyer.get(f"/questions/{question_id}?lang=ru").get_data(as_text=True)
    assert "Вопросом занимается Dana Coordinator: сейчас изменить его может только он(а)." \
        in russian
    kazakh = lawyer.get(f"/questions/{question_id}?lang=kk").get_data(as_text=True)
    assert "Бұл сұрақпен Dana Coordinator айналысуда" in kazakh
    with db() as session:  # the coordinator's claim lapsed
        found = session.get(Question, question_id)
        assert found is not None
        found.claim_touched_at = datetime.now(UTC) - timedelta(hours=5)
    lapsed = lawyer.get(f"/questions/{question_id}?lang=en")
    assert "Claim" in page(lapsed).buttons
    assert claim_hint in lapsed.get_data(as_text=True)
    assert 'id="held-by"' not in lapsed.get_data(as_text=True)
    # The holder is asked neither.
    mine = _logged_in(app, coordinator).get(f"/questions/{question_id}")
    assert claim_hint not in mine.get_data(as_text=True)
    assert 'id="held-by"' not in mine.get_data(as_text=True)


def test_a_missing_csrf_token_changes_nothing(app: Flask, db: Db, settings: Settings,
                                              consultant: str) -> None:
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    response = lawyer.post(f"/questions/{question_id}/notes", {"body": "x"})
    assert response.status_code == 400
    assert _events(db, question_id, audit.NOTED) == []


def test_the_holder_sees_the_forms_and_keeps_the_claim_fresh(
        app: Flask, db: Db, settings: Settings, consultant: str) -> None:
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    with db() as session:
        found = session.get(Question, question_id)
        assert found is not None
        found.claim_touched_at = datetime.now(UTC) - timedelta(minutes=20)
    response = lawyer.get(f"/questions/{question_id}")
    parsed = page(response)
    html = response.get_data(as_text=True)
    assert "Release" in parsed.buttons and "Claim" not in parsed.buttons
    assert {"Silence", "Wrong number", "Test call", "Abusive"} <= set(parsed.buttons)
    assert f">{TRANSCRIPT}</textarea>" in html  # the correction starts from the transcript
    assert 'hx-post="/questions/' in html and 'hx-select="#notes"' in html
    touched = _question(db, question_id).claim_touched_at
    assert touched is not None and datetime.now(UTC) - touched < timedelta(minutes=1)


def test_correcting_the_transcript(app: Flask, db: Db, settings: Settings,
                                   consultant: str) -> None:
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    corrected = "Мне шестьдесят лет. Когда назначат пенсию?"
    response = lawyer.post(f"/questions/{question_id}/transcript",
                           {"csrf_token": _token(lawyer), "corrected_text": corrected + "\r\n"})
    assert response.status_code == 303
    assert response.headers["Location"] == \
        f"/questions/{question_id}?saved=transcript#transcript"
    assert _question(db, question_id).corrected_text == corrected
    changed = _events(db, question_id, audit.CHANGED)
    assert [e.detail for e in changed] == [{"fields": ["corrected_text"],
                                            "length": len(corrected)}]
    html = lawyer.get(response.headers["Location"]).get_data(as_text=True)
    assert f">{corrected}</textarea>" in html and "Saved." in html
    # The same text again changes nothing and writes nothing.
    lawyer.post(f"/questions/{question_id}/transcript",
                {"csrf_token": _token(lawyer), "corrected_text": corrected})
    assert len(_events(db, question_id, audit.CHANGED)) == 1
    too_long = lawyer.post(f"/questions/{question_id}/transcript",
                           {"csrf_token": _token(lawyer), "corrected_text": "а" * 8001})
    assert too_long.status_code == 400
    assert _question(db, question_id).corrected_text == corrected


def test_adding_notes(app: Flask, db: Db, settings: Settings, consultant: str) -> None:
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    for body in ("Перезвонить после обеда", "Нужна справка <о доходах>", "   "):
        response = lawyer.post(f"/questions/{question_id}/notes",
                               {"csrf_token": _token(lawyer), "body": body})
        assert response.status_code == 303
    with db() as session:
        notes = session.scalars(select(Note).order_by(Note.id)).all()
        assert [n.body for n in notes] == ["Перезвонить после обеда",
                                           "Нужна справка <о доходах>"]
        note_ids = [n.id for n in notes]
    noted = _events(db, question_id, audit.NOTED)
    assert [e.detail["note_id"] for e in noted] == note_ids
    assert all("Перезвонить" not in str(e.detail) for e in noted)
    html = lawyer.get(f"/questions/{question_id}").get_data(as_text=True)
    assert "Перезвонить после обеда" in html and "Нужна справка &lt;о доходах&gt;" in html
    assert "Aigerim Nurlanovna" in html
    # The note of spaces only: the page says it was empty, not "Saved.".
    empty = lawyer.post(f"/questions/{question_id}/notes",
                        {"csrf_token": _token(lawyer), "body": "   "})
    shown = page(lawyer.get(empty.headers["Location"]))
    assert shown.errors == [
        "The note was empty: nothing was added. Write the note, then add it."]
    assert "Saved." not in lawyer.get(empty.headers["Location"]).get_data(as_text=True)


def test_setting_tags(app: Flask, db: Db, settings: Settings, consultant: str) -> None:
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    before = _question(db, question_id).priority_at
    response = lawyer.post(f"/questions/{question_id}/tags", {
        "csrf_token": _token(lawyer), "topic": "disability", "region": "akmola",
        "village": "  Жалтыр  ауылы ", "urgent": "1"})
    assert response.status_code == 303
    found = _question(db, question_id)
    assert (found.topic, found.region, found.village, found.urgent) == (
        "disability", "akmola", "Жалтыр ауылы", True)
    assert found.priority_at is not None and before is not None
    assert found.priority_at < before  # urgent moves it up the queue
    changed = _events(db, question_id, audit.CHANGED)
    assert [e.detail for e in changed] == [{
        "fields": ["topic", "region", "village", "urgent"],
        "values": {"topic": "disability", "region": "akmola", "urgent": True}}]
    html = lawyer.get(f"/questions/{question_id}?lang=ru").get_data(as_text=True)
    assert '<option value="akmola" selected>Акмолинская область</option>' in html
    assert '<option value="disability" selected>Инвалидность</option>' in html
    # Only what changed is recorded; nothing changed, nothing recorded.
    lawyer.post(f"/questions/{question_id}/tags", {
        "csrf_token": _token(lawyer), "topic": "disability", "region": "akmola",
        "village": "Жалтыр ауылы"})
    lawyer.post(f"/questions/{question_id}/tags", {
        "csrf_token": _token(lawyer), "topic": "disability", "region": "akmola",
        "village": "Жалтыр ауылы"})
    assert [e.detail for e in _events(db, question_id, audit.CHANGED)][1:] == [
        {"fields": ["urgent"], "values": {"urgent": False}}]
    assert _question(db, question_id).priority_at == before


REGION_ORDER = {
    # The cities first; then in the Kazakh alphabet (А Ә Б … К Қ … У Ұ Ү … Ш … Ы І …).
    "kk": ["Алматы қаласы", "Астана қаласы", "Шымкент қаласы", "Абай облысы", "Ақмола облысы",
           "Ақтөбе облысы", "Алматы облысы", "Атырау облысы", "Батыс Қазақстан облысы",
           "Жамбыл облысы", "Жетісу облысы", "Қарағанды облысы", "Қостанай облысы",
           "Қызылорда облысы", "Маңғыстау облысы", "Павлодар облысы",
           "Солтүстік Қазақстан облысы", "Түркістан облысы", "Ұлытау облысы",
           "Шығыс Қазақстан облысы"],
    # By the name's own word, wherever "область" stands; Ұлытау after the У names.
    "ru": ["город Алматы", "город Астана", "город Шымкент", "область Абай",
           "Акмолинская область", "Актюбинская область", "Алматинская область",
           "Атырауская область", "Восточно-Казахстанская область", "Жамбылская область",
           "область Жетісу", "Западно-Казахстанская область", "Карагандинская область",
           "Костанайская область", "Кызылординская область", "Мангистауская область",
           "Павлодарская область", "Северо-Казахстанская область", "Туркестанская область",
           "область Ұлытау"],
    "en": ["Almaty (city)", "Astana (city)", "Shymkent (city)", "Abai Region", "Akmola Region",
           "Aktobe Region", "Almaty Region", "Atyrau Region", "East Kazakhstan Region",
           "Jambyl Region", "Jetisu Region", "Karaganda Region", "Kostanay Region",
           "Kyzylorda Region", "Mangystau Region", "North Kazakhstan Region",
           "Pavlodar Region", "Turkistan Region", "Ulytau Region", "West Kazakhstan Region"],
}


@pytest.mark.parametrize("language", ["kk", "ru", "en"])
def test_the_regions_are_in_the_order_of_the_pages_alphabet(
        app: Flask, db: Db, settings: Settings, consultant: str, language: str) -> None:
    """Python's order of code points put Kazakh's own letters after Я (Ақмола after Атырау,
    Қарағанды … Ұлытау at the end) and Russian's "область Абай" apart from "Акмолинская
    область"."""
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    html = lawyer.get(f"/questions/{question_id}?lang={language}").get_data(as_text=True)
    select_html = html.split('<select id="region" name="region">', 1)[1].split("</select>")[0]
    names = re.findall(r'<option value="[a-z_]+">([^<]+)</option>', select_html)
    assert names == REGION_ORDER[language]


@pytest.mark.parametrize("field,value", [("region", "mars"), ("topic", "astrology"),
                                         ("village", "а" * 121)])
def test_tags_the_page_does_not_offer_are_refused(app: Flask, db: Db, settings: Settings,
                                                  consultant: str, field: str,
                                                  value: str) -> None:
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    response = lawyer.post(f"/questions/{question_id}/tags",
                           {"csrf_token": _token(lawyer), "topic": "pension", field: value})
    assert response.status_code == 400
    found = _question(db, question_id)
    assert (found.topic, found.region, found.village) == ("pension", None, None)
    assert _events(db, question_id, audit.CHANGED) == []


def test_with_the_accounts_gone_a_failure_is_still_explained(
        app: Flask, db: Db, settings: Settings, consultant: str) -> None:
    """The database fails before the user is loaded (here: the accounts' table is gone): the
    error page is drawn for nobody, with the note to copy and a <main> for htmx to show."""
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    token = _token(lawyer)
    with db() as session:
        session.execute(text("ALTER TABLE users RENAME TO users_away"))
    response = lawyer.client.post(
        f"/questions/{question_id}/notes", base_url="https://hotline.test",
        data={"body": "Перезвонить <после> обеда"},
        headers={"HX-Request": "true", "X-CSRFToken": token, "Accept-Language": "ru",
                 "Referer": f"https://hotline.test/questions/{question_id}"})
    assert response.status_code == 500 and response.headers["HX-Retarget"] == "main"
    page = response.get_data(as_text=True)
    assert "<h1>Что-то пошло не так</h1>" in page and "</main>" in page
    assert "Перезвонить &lt;после&gt; обеда" in page


@pytest.mark.parametrize("language", ["ru", "kk", "en"])
def test_a_server_failure_is_explained_and_gives_back_what_was_written(
        app: Flask, db: Db, settings: Settings, consultant: str, language: str) -> None:
    """A form that fails on the server (here: the notes table is gone) answers in the user's
    language that it may not be saved, with the note to copy, not Werkzeug's English page."""
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    lawyer.headers["Accept-Language"] = language
    token = _token(lawyer)
    with db() as session:
        session.execute(text("DROP TABLE notes"))
    response = lawyer.post(f"/questions/{question_id}/notes",
                           {"csrf_token": token, "body": "Перезвонить <после> обеда"})
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    title = {"ru": "Что-то пошло не так", "kk": "Бір нәрсе дұрыс болмады",
             "en": "Something went wrong"}[language]
    assert f"<h1>{title}</h1>" in page
    assert '<textarea id="sms-draft" rows="8" readonly>Перезвонить &lt;после&gt; обеда' in page
    assert 'href="/queue"' in page


def test_htmx_gets_refusals_in_place_of_the_page_and_polls_keep_theirs(
        app: Flask, db: Db, settings: Settings, consultant: str, coordinator: str) -> None:
    """A refused htmx form replaces the page's main part with the message
    (static/workspace.js lets htmx swap it); a failed poll swaps nothing; a poll whose
    session has ended sends the whole page to the login form instead of putting it where
    the call's status was."""
    question_id = _voice_question(db, settings)
    holder, other = _logged_in(app, consultant), _logged_in(app, coordinator)
    _claim(holder, question_id)
    htmx = {"HX-Request": "true", "X-CSRFToken": _token(other), "Accept-Language": "en",
            "Referer": f"https://hotline.test/questions/{question_id}"}
    refused = other.client.post(f"/questions/{question_id}/notes",
                                base_url="https://hotline.test", data={"body": "x"},
                                headers=htmx)
    assert refused.status_code == 409
    assert (refused.headers["HX-Retarget"], refused.headers["HX-Reselect"],
            refused.headers["HX-Reswap"]) == ("main", "main", "outerHTML")
    assert "<h1>Not changed</h1>" in refused.get_data(as_text=True)
    # A failed poll is not redirected anywhere: htmx drops it, and its part of the page stays
    # (static/workspace.js swaps only what names its target).
    poll = holder.client.get("/questions/999999/callback-panel",
                             base_url="https://hotline.test", headers={"HX-Request": "true"})
    assert poll.status_code == 404 and "HX-Retarget" not in poll.headers
    # Without htmx, nothing of this.
    plain = other.post(f"/questions/{question_id}/notes", {"csrf_token": _token(other),
                                                           "body": "x"})
    assert plain.status_code == 409 and "HX-Retarget" not in plain.headers
    nobody = Browser(app).client
    # htmx restoring a page from history follows a redirect as a page does.
    restore = nobody.get("/queue", base_url="https://hotline.test",
                         headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert restore.status_code == 302 and "HX-Redirect" not in restore.headers
    # The call's status polled by a page whose session has ended: to the login form, then
    # back to that page.
    logged_out = nobody.get(f"/questions/{question_id}/callback-panel",
                            base_url="https://hotline.test", headers={
                                "HX-Request": "true",
                                "HX-Current-URL": f"https://hotline.test/questions/{question_id}"})
    assert logged_out.status_code == 200 and logged_out.get_data() == b""
    assert logged_out.headers["HX-Redirect"] == "/login"
    back = Browser(app)
    back.client = nobody
    assert back.login(consultant).headers["Location"] == f"/questions/{question_id}"


def test_htmx_saves_a_note_without_reloading(app: Flask, db: Db, settings: Settings,
                                             consultant: str) -> None:
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    token = _token(lawyer)
    # htmx sends the token in a header and follows the redirect to take #notes from the page.
    response = lawyer.client.post(
        f"/questions/{question_id}/notes", base_url="https://hotline.test",
        data={"body": "через htmx"}, follow_redirects=True,
        headers={"HX-Request": "true", "X-CSRFToken": token, "Accept-Language": "en",
                 "Referer": f"https://hotline.test/questions/{question_id}"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert '<section id="notes">' in html and "через htmx" in html and "Saved." in html


def test_quick_close(app: Flask, db: Db, settings: Settings, consultant: str) -> None:
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    refused = lawyer.post(f"/questions/{question_id}/close",
                          {"csrf_token": _token(lawyer), "reason": "resolved"})
    assert refused.status_code == 400  # an outcome, not a quick close
    assert _question(db, question_id).status == QUESTION_CLAIMED
    response = lawyer.post(f"/questions/{question_id}/close",
                           {"csrf_token": _token(lawyer), "reason": "wrong_number"})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/queue?closed={question_id}"
    found = _question(db, question_id)
    assert (found.status, found.close_reason, found.closed_by_id, found.claimed_by_id,
            found.claim_touched_at) == (QUESTION_CLOSED, "wrong_number",
                                        _user_id(db, consultant), None, None)
    assert found.closed_at is not None
    assert [e.detail for e in _events(db, question_id, audit.CLOSED)] == [
        {"reason": "wrong_number"}]
    # Read-only now: no forms, and changes are refused.
    response = lawyer.get(f"/questions/{question_id}")
    parsed = page(response)
    html = response.get_data(as_text=True)
    assert "Wrong number" in html and "closed" in html
    assert not {"Claim", "Release", "Silence", "Add the note"} & set(parsed.buttons)
    again = lawyer.post(f"/questions/{question_id}/notes",
                        {"csrf_token": _token(lawyer), "body": "ещё"})
    assert again.status_code == 409
    assert f"Question {question_id} is closed already." in again.get_data(as_text=True)


def test_release(app: Flask, db: Db, settings: Settings, consultant: str) -> None:
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    response = lawyer.post(f"/questions/{question_id}/release", {"csrf_token": _token(lawyer)})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/queue?released={question_id}"
    found = _question(db, question_id)
    assert (found.status, found.claimed_by_id) == (QUESTION_WAITING, None)
    assert [e.user_id for e in _events(db, question_id, audit.RELEASED)] == [
        _user_id(db, consultant)]
    assert "Claim" in page(lawyer.get(f"/questions/{question_id}")).buttons


def test_the_page_in_kazakh_and_russian(app: Flask, db: Db, settings: Settings,
                                        consultant: str) -> None:
    question_id = _voice_question(db, settings)
    lawyer = _logged_in(app, consultant)
    _claim(lawyer, question_id)
    kazakh = page(lawyer.get(f"/questions/{question_id}?lang=kk"))
    russian = page(lawyer.get(f"/questions/{question_id}?lang=ru"))
    assert kazakh.lang == "kk" and russian.lang == "ru"
    assert kazakh.headings == [f"Сұрақ {question_id}"]
    assert russian.headings == [f"Вопрос {question_id}"]
    assert "Тишина" in russian.buttons
