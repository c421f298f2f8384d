"""Retention: old audio of closed questions deleted, old numbers pseudonymised, open questions
never touched, a dry run changing nothing, and the nightly job."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from hotline import cli_retention, jobs
from hotline.cli_retention import run_retention
from hotline.config import Settings
from storage import retention as store
from storage.audio_store import FolderAudioStore
from storage.calls import touch_caller
from storage.db import unit_of_work
from storage.models import (
    AudioBlob,
    Call,
    CallbackAttempt,
    Caller,
    Note,
    Question,
    Recording,
    SmsMessage,
    User,
    utcnow,
)
from storage.retention import RECORDING_DELETED, is_pseudonym, pseudonym
from tests.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    beside_held_writer_queue,
    row_counts,
    run_cli,
    runtime,
)
from tests.twilio_api import RECORDING_DELETE, TwilioApi, twilio_error
from tests.workspace_support import Db, add_user

DAY = timedelta(days=1)
PHONES = {name: f"+7701000000{i}" for i, name in enumerate("abcde", 1)}


@dataclass
class World:
    """Ids of what the dataset made, and where its audio files are."""

    callers: dict[str, int]
    questions: dict[str, int]
    files: dict[str, Path]


def add_question(session: object, caller: Caller, name: str, audio_dir: Path, *,
                 status: str = "closed", closed_days_ago: float | None = None,
                 created_days_ago: float = 600) -> tuple[Question, Path]:
    """A voice question with its recording on disk."""
    now = utcnow()
    question = Question(channel="voice", language="ru", topic="pension", status=status,
                        caller=caller, created_at=now - created_days_ago * DAY,
                        closed_at=None if closed_days_ago is None else now - closed_days_ago * DAY,
                        close_reason="resolved" if closed_days_ago is not None else None)
    relative = f"2025/{name}.wav"
    path = audio_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + name.encode())
    question.recording = Recording(recording_sid=f"RE{name}", call_sid=f"CA{name}",
                                   source_url=f"https://api.twilio.com/{name}",
                                   file_path=relative, download_state="stored")
    session.add(question)  # type: ignore[attr-defined]
    return question, path


@pytest.fixture
def world(app: Flask, db: Db, settings: Settings) -> World:
    """Callers and questions around the default limits (audio 90 days, numbers 365 days).

    a: one question closed 100 days ago, one 400 days ago: audio of both goes, number stays.
    b: one question closed 400 days ago, SMS and a call: audio goes, number pseudonymised.
    c: one question closed 500 days ago, one still WAITING: the closed one's audio goes,
       nothing else of c.
    d: no question, last heard of 400 days ago: number pseudonymised.
    e: no question, heard of 10 days ago: nothing.
    x: a CLAIMED question whose closed_at says 400 days ago (inconsistent): untouched.
    y: a question closed 10 days ago: untouched.
    """
    audio_dir = settings.audio_dir
    now = utcnow()
    with db() as session:
        seen = {"a": 100, "b": 400, "c": 10, "d": 400, "e": 10}
        callers = {name: Caller(phone=PHONES[name], first_seen=now - 700 * DAY,
                                last_seen=now - seen[name] * DAY) for name in PHONES}
        session.add_all(callers.values())
        made = {
            "a1": add_question(session, callers["a"], "a1", audio_dir, closed_days_ago=100),
            "a2": add_question(session, callers["a"], "a2", audio_dir, closed_days_ago=400),
            "b1": add_question(session, callers["b"], "b1", audio_dir, closed_days_ago=400),
            "c1": add_question(session, callers["c"], "c1", audio_dir, closed_days_ago=500),
            "c2": add_question(session, callers["c"], "c2", audio_dir, status="waiting"),
            "x": add_question(session, callers["e"], "x", audio_dir, status="claimed",
                              closed_days_ago=400),
            "y": add_question(session, callers["c"], "y", audio_dir, closed_days_ago=10),
        }
        session.add(SmsMessage(direction="in", phone=PHONES["b"], caller=callers["b"],
                               body="Сұрақ", status="received"))
        session.add(SmsMessage(direction="out", phone=PHONES["b"], body="Жауап",
                               status="delivered"))
        session.add(Call(call_sid="CAb", caller=callers["b"], from_number=PHONES["b"],
                         status="completed"))
        session.flush()
        return World(callers={n: c.id for n, c in callers.items()},
                     questions={n: q.id for n, (q, _p) in made.items()},
                     files={n: p for n, (_q, p) in made.items()})


def snapshot(db: Db) -> dict[str, object]:
    """Everything retention could change."""
    with db() as session:
        return {
            "counts": row_counts(session),
            "phones": sorted(session.scalars(select(Caller.phone))),
            "recordings": sorted((r.question_id, r.file_path, r.download_state)
                                 for r in session.scalars(select(Recording))),
            "sms": sorted(session.scalars(select(SmsMessage.phone))),
            "calls": sorted(session.scalars(select(Call.from_number))),
        }


def test_a_dry_run_lists_what_would_go_and_changes_nothing(app: Flask, db: Db,
                                                           world: World) -> None:
    before = snapshot(db)
    result = run_cli(app, ["retention", "--dry-run"])
    assert result.exit_code == 0, result.output
    q = world.questions
    assert (f"4 recordings (4 files); questions #{q['a1']}, #{q['a2']}, #{q['b1']}, "
            f"#{q['c1']}") in result.output
    assert "2 callers" in result.output
    assert f"caller {world.callers['b']}: questions #{q['b1']}" in result.output
    assert f"caller {world.callers['d']}: questions none" in result.output
    assert "Twilio's copies" not in result.output  # these sids are not Twilio's
    assert "dry run: nothing was changed" in result.output
    assert "+7701" not in result.output  # never a phone number
    assert snapshot(db) == before
    assert all(path.exists() for path in world.files.values())


def test_retention_deletes_old_audio_and_pseudonymises_old_numbers(
        app: Flask, db: Db, world: World) -> None:
    result = run_cli(app, ["retention"])
    assert result.exit_code == 0, result.output
    assert "done: 4 files removed, 4 recordings marked deleted, 2 callers" in result.output
    gone = {"a1", "a2", "b1", "c1"}
    for name, path in world.files.items():
        assert path.exists() == (name not in gone), name
    key = runtime(app).settings.ensure_secret_key().encode()
    with db() as session:
        for name, question_id in world.questions.items():
            recording = session.scalars(select(Recording).where(
                Recording.question_id == question_id)).one()
            if name in gone:
                assert (recording.file_path, recording.download_state) == (None,
                                                                          RECORDING_DELETED)
            else:
                assert recording.file_path == f"2025/{name}.wav"
                assert recording.download_state == "stored"
        phones = {name: session.get(Caller, caller_id).phone  # type: ignore[union-attr]
                  for name, caller_id in world.callers.items()}
        assert phones == {"a": PHONES["a"], "b": pseudonym(PHONES["b"], key),
                          "c": PHONES["c"], "d": pseudonym(PHONES["d"], key),
                          "e": PHONES["e"]}
        assert is_pseudonym(phones["b"]) and len(phones["b"]) <= 20
        # b's SMS (linked or not) and calls carry the same pseudonym; b's question stays b's.
        assert set(session.scalars(select(SmsMessage.phone))) == {phones["b"]}
        assert session.scalars(select(Call.from_number)).one() == phones["b"]
        b1 = session.get(Question, world.questions["b1"])
        assert b1 is not None and b1.caller_id == world.callers["b"]
    again = run_cli(app, ["retention"])
    assert "done: 0 files removed, 0 recordings marked deleted, 0 callers" in again.output


def test_numbers_written_in_texts_lose_themselves_with_the_caller(app: Flask, db: Db,
                                                                 world: World) -> None:
    """A resident who writes "my number is ..., call me back" (or their son's number) keeps
    no readable number once their own is pseudonymised: in what they wrote every number goes,
    however spelled; in what the hotline wrote (a note, a referral, an SMS sent) only theirs,
    so an organisation's number in a referral stays. Another caller's texts are untouched."""
    add_user(app, "lawyer@example.kz")
    b_number = PHONES["b"]
    spaced = "8 701 000 00 02"  # b's number as a resident writes it
    son = "8(705)1234567"
    office = "8 (7172) 55-12-34"
    with db() as session:
        lawyer = session.scalars(select(User)).one()
        b1 = session.get(Question, world.questions["b1"])
        a1 = session.get(Question, world.questions["a1"])
        assert b1 is not None and a1 is not None
        sms = Question(channel="sms", language="ru", topic="pension", status="closed",
                       caller_id=world.callers["b"], text=f"Перезвоните на {spaced}",
                       created_at=b1.created_at, closed_at=b1.closed_at,
                       close_reason="resolved")
        session.add(sms)
        b1.corrected_text = f"перезвоните мне {b_number}"
        b1.referral = f"ЦОН, телефон {office}"
        a1.corrected_text = f"мой номер {PHONES['a']}"
        session.add(SmsMessage(direction="in", phone=b_number, caller_id=world.callers["b"],
                               body=f"Мой номер {b_number}, сына {son}", status="received"))
        session.add(SmsMessage(direction="out", phone=b_number, caller_id=world.callers["b"],
                               body="Позвоните нам: +77000000000", status="delivered"))
        session.add(Note(question_id=b1.id, author_id=lawyer.id,
                         body=f"Звонил на {spaced}, ЦОН {office}"))
        caller = session.get(Caller, world.callers["b"])
        assert caller is not None
        caller.sms_answered_text = f"пенсия, мой {b_number}"
    assert run_cli(app, ["retention"]).exit_code == 0, "retention failed"
    key = runtime(app).settings.ensure_secret_key().encode()
    b_pseudonym = pseudonym(b_number, key)
    son_pseudonym = pseudonym("+77051234567", key)
    with db() as session:
        written = "\n".join([
            *session.scalars(select(SmsMessage.body)), *session.scalars(select(Note.body)),
            *(t for q in session.scalars(select(Question))
              for t in (q.text, q.corrected_text, q.referral) if t),
            *(c.sms_answered_text for c in session.scalars(select(Caller))
              if c.sms_answered_text)])
    for gone in (b_number, spaced, son):
        assert gone not in written
    for kept in (f"Перезвоните на {b_pseudonym}", f"перезвоните мне {b_pseudonym}",
                 f"Мой номер {b_pseudonym}, сына {son_pseudonym}",
                 f"Звонил на {b_pseudonym}, ЦОН {office}", f"ЦОН, телефон {office}",
                 "Позвоните нам: +77000000000", f"пенсия, мой {b_pseudonym}",
                 f"мой номер {PHONES['a']}"):  # a keeps their number: not due
        assert kept in written, kept


@pytest.mark.parametrize("now_in", ["database", "folder"])
def test_retention_deletes_the_copy_left_in_the_other_store(
        app: Flask, db: Db, world: World, settings: Settings,
        make_app: Callable[[Settings], Flask], now_in: str) -> None:
    """An install switched stores with `hotline audio copy`, which keeps the source: the
    recordings due go from both, the folder's files and the database's blobs, so no resident's
    recording outlives the retention time (nor rides along in every backup). Open questions'
    audio stays in both."""
    if now_in == "database":
        assert run_cli(app, ["audio", "copy", "--to", "database"]).exit_code == 0
    else:  # in the database first, copied back to the folder
        database_app = make_app(settings.override(audio_store="database"))
        assert run_cli(database_app, ["audio", "copy", "--to", "database"]).exit_code == 0
    switched = make_app(settings.override(audio_store=now_in))
    result = run_cli(switched, ["retention"])
    assert result.exit_code == 0, result.output
    gone = {"a1", "a2", "b1", "c1"}
    with db() as session:
        blobs = set(session.scalars(select(AudioBlob.key)))
    for name, path in world.files.items():
        assert path.exists() == (name not in gone), name
        assert (f"2025/{name}.wav" in blobs) == (name not in gone), name


def test_a_leftover_file_that_cannot_be_deleted_is_removed_by_a_later_run(
        app: Flask, db: Db, world: World, settings: Settings,
        make_app: Callable[[Settings], Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    """On a database-store install whose old folder copy cannot be deleted (a permission):
    the blobs go and the rows are marked deleted (so Twilio's copies go too), each keeping
    its key while its file is there; the next run, the folder writable again, removes the
    files and forgets the keys."""
    assert run_cli(app, ["audio", "copy", "--to", "database"]).exit_code == 0
    database_app = make_app(settings.override(audio_store="database"))
    with monkeypatch.context() as patch:
        def refused(*_args: object, **_kwargs: object) -> bool:
            raise PermissionError(13, "Permission denied")

        patch.setattr(FolderAudioStore, "delete", refused)
        result = run_cli(database_app, ["retention"])
    assert "could not be deleted" in result.output and "the next run tries again" in result.output
    gone = ("a1", "a2", "b1", "c1")
    with db() as session:
        blobs = set(session.scalars(select(AudioBlob.key)))
        states = {r.recording_sid: (r.file_path, r.download_state)
                  for r in session.scalars(select(Recording))}
    for name in gone:
        assert f"2025/{name}.wav" not in blobs and world.files[name].exists(), name
        assert states[f"RE{name}"] == (f"2025/{name}.wav", RECORDING_DELETED), name
    again = run_cli(database_app, ["retention"])
    assert again.exit_code == 0, again.output
    assert "done: 4 files removed, 0 recordings marked deleted" in again.output
    with db() as session:
        states = {r.recording_sid: (r.file_path, r.download_state)
                  for r in session.scalars(select(Recording))}
    for name in gone:
        assert not world.files[name].exists() and states[f"RE{name}"] == (None,
                                                                         RECORDING_DELETED)


def test_a_run_stopped_mid_batch_leaves_files_and_rows_as_they_were(
        app: Flask, db: Db, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker dies (here: an error) on the third recording of a batch: its transaction
    rolls back, and no file has gone with it: every recording of the batch still says stored
    and still has its file (the player does not offer audio that is not there), for the next
    run."""
    real = store.forget_audio
    calls: list[int] = []

    def dies_on_the_third(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("worker killed")
        real(*args, **kwargs)

    monkeypatch.setattr(store, "forget_audio", dies_on_the_third)
    with pytest.raises(RuntimeError):
        run_retention(runtime(app))
    with db() as session:
        states = {r.recording_sid: r.download_state for r in session.scalars(select(Recording))}
    for name, path in world.files.items():
        assert path.exists() and states[f"RE{name}"] == "stored", name


def test_retention_never_touches_an_open_question(
        db: Db, world: World, settings: Settings, make_app: Callable[[Settings], Flask]) -> None:
    # Even with every limit at one day, the open questions' audio and callers stay.
    eager = make_app(settings.override(audio_retention_days=1, phone_retention_days=1))
    result = run_cli(eager, ["retention"])
    assert result.exit_code == 0, result.output
    assert world.files["c2"].exists() and world.files["x"].exists()
    with db() as session:
        for name in ("c2", "x"):
            question = session.get(Question, world.questions[name])
            assert question is not None and question.recording is not None
            assert question.recording.file_path == f"2025/{name}.wav"
            assert question.caller is not None and not is_pseudonym(question.caller.phone)
        assert not world.files["y"].exists()  # closed 10 days ago: now past one day


def test_twilios_error_texts_lose_the_number_with_the_caller(app: Flask, db: Db,
                                                            world: World) -> None:
    """Twilio's error texts are kept as it wrote them, and some name the number ("The 'To'
    number +7701… is not a valid phone number"): the caller's go with the number, with or
    without the +; another caller's stay."""
    add_user(app, "lawyer@example.kz")
    b_number, a_number = PHONES["b"], PHONES["a"]
    with db() as session:
        lawyer = session.scalars(select(User)).one()
        session.add(SmsMessage(direction="out", phone=b_number, caller_id=world.callers["b"],
                               body="Жауап", status="failed", error_code=21211,
                               error_message=f"The 'To' number {b_number} is not valid."))
        # Sent to the number with no caller record linked: found by the number.
        session.add(SmsMessage(direction="out", phone=b_number, body="Жауап", status="failed",
                               error_message=f"Unreachable: {b_number}"))
        session.add(CallbackAttempt(question_id=world.questions["b1"], consultant_id=lawyer.id,
                                    state="failed",
                                    error=f"Number {b_number.lstrip('+')} unverified (21219)"))
        session.add(CallbackAttempt(question_id=world.questions["a2"], consultant_id=lawyer.id,
                                    state="failed", error=f"Number {a_number} unverified"))
    assert run_cli(app, ["retention"]).exit_code == 0
    b_pseudonym = pseudonym(b_number, runtime(app).settings.ensure_secret_key().encode())
    with db() as session:
        texts = [*session.scalars(select(SmsMessage.error_message)
                                  .where(SmsMessage.error_message.is_not(None))),
                 *session.scalars(select(CallbackAttempt.error).order_by(CallbackAttempt.id))]
    assert texts == [f"The 'To' number {b_pseudonym} is not valid.",
                     f"Unreachable: {b_pseudonym}",
                     f"Number {b_pseudonym} unverified (21219)", f"Number {a_number} unverified"]


def test_a_number_of_no_caller_record_is_pseudonymised_too(app: Flask, db: Db,
                                                         world: World) -> None:
    """A From the hotline could not read as a phone number is kept on its call and SMS with no
    caller record; once old enough (and no question of it open), it goes as callers' do. A
    recent one, one with an open question, and "anonymous" stay."""
    now = utcnow()
    old, recent, asking = "+77995550101", "+77995550202", "+77995550303"
    with db() as session:
        session.add(SmsMessage(direction="in", phone=old, body="сұрақ", status="received",
                               created_at=now - 800 * DAY, updated_at=now - 800 * DAY,
                               error_message=f"from {old}"))
        session.add(Call(call_sid="CAold", from_number=old, status="completed",
                         started_at=now - 800 * DAY))
        session.add(Call(call_sid="CAnew", from_number=recent, status="completed",
                         started_at=now - 10 * DAY))
        session.add(Call(call_sid="CAanon", from_number="anonymous", status="completed",
                         started_at=now - 800 * DAY))
        call = Call(call_sid="CAask", from_number=asking, status="completed",
                    started_at=now - 800 * DAY)
        session.add(call)
        session.flush()
        session.add(Question(channel="voice", language="ru", status="waiting", call_id=call.id,
                             created_at=now - 800 * DAY))
    listed = run_cli(app, ["retention", "--dry-run"])
    assert "numbers on calls and SMS of no caller record, not heard from for 365 days: 1" in (
        listed.output)
    assert "+7799" not in listed.output
    done = run_cli(app, ["retention"])
    assert "1 numbers of no caller record" in done.output, done.output
    gone = pseudonym(old, runtime(app).settings.ensure_secret_key().encode())
    with db() as session:
        calls = {sid: number for sid, number in session.execute(
            select(Call.call_sid, Call.from_number))}
        sms = session.scalars(select(SmsMessage).where(SmsMessage.caller_id.is_(None),
                                                       SmsMessage.direction == "in")).one()
    assert (calls["CAold"], sms.phone, sms.error_message) == (gone, gone, f"from {gone}")
    assert (calls["CAnew"], calls["CAanon"], calls["CAask"]) == (recent, "anonymous", asking)


def test_a_returning_caller_is_joined_to_their_pseudonymised_record(
        app: Flask, db: Db, world: World, settings: Settings) -> None:
    run_cli(app, ["retention"])
    # b calls again after pseudonymisation: a new caller row with the real number.
    with db() as session:
        now = utcnow()
        back = Caller(phone=PHONES["b"], first_seen=now - 390 * DAY, last_seen=now - 380 * DAY,
                      sms_opted_out=True, sms_opted_out_at=now - 385 * DAY)
        session.add(back)
        question, _path = add_question(session, back, "b2", settings.audio_dir,
                                       closed_days_ago=380, created_days_ago=390)
        session.flush()
        back_id, question_id = back.id, question.id
    result = run_cli(app, ["retention"])
    assert "1 callers pseudonymised (1 joined to an earlier record)" in result.output
    with db() as session:
        assert session.get(Caller, back_id) is None
        returned = session.get(Question, question_id)
        assert returned is not None and returned.caller_id == world.callers["b"]
        # The STOP sent on the newer record holds on the joined one, with its time.
        joined = session.get(Caller, world.callers["b"])
        assert joined is not None and joined.sms_opted_out
        assert joined.sms_opted_out_at == now - 385 * DAY


def test_a_path_outside_the_audio_folder_is_left_alone(app: Flask, db: Db,
                                                       settings: Settings) -> None:
    outside = settings.data_dir / "not-audio.wav"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(b"keep me")
    with db() as session:
        question, _path = add_question(session, Caller(phone="+77019999999"), "z",
                                       settings.audio_dir, closed_days_ago=400)
        assert question.recording is not None
        question.recording.file_path = "../not-audio.wav"
    result = run_cli(app, ["retention"])
    assert result.exit_code == 1
    assert "path outside the audio folder" in result.output
    assert outside.exists()


def test_the_nightly_job_runs_retention(app: Flask, db: Db, world: World) -> None:
    # The worker's scheduler calls it every night at 21:30 UTC, 02:30 in Almaty.
    assert jobs.retention_job.task_class().validate_datetime(datetime(2026, 3, 1, 21, 30))
    assert not jobs.retention_job.task_class().validate_datetime(datetime(2026, 3, 1, 22, 30))
    deleted, pseudonymised = jobs.retention_job.call_local()
    assert (deleted, pseudonymised) == (4, 2)
    assert not world.files["a2"].exists()


def test_zero_days_turns_retention_off(db: Db, world: World, settings: Settings,
                                       make_app: Callable[[Settings], Flask]) -> None:
    off = make_app(settings.override(audio_retention_days=0, phone_retention_days=0))
    before = snapshot(db)
    result = run_cli(off, ["retention"])
    assert "audio retention is off" in result.output
    assert "pseudonymisation is off" in result.output
    assert snapshot(db) == before


@pytest.mark.parametrize("trouble", ["directory", "permission"])
def test_a_file_that_cannot_be_deleted_is_skipped_and_the_rest_goes_on(
        app: Flask, db: Db, world: World, monkeypatch: pytest.MonkeyPatch, trouble: str) -> None:
    # a2's file cannot go (a directory in its place, or no permission); b1's is gone already.
    stuck = world.files["a2"]
    if trouble == "directory":
        stuck.unlink()
        stuck.mkdir()
        (stuck / "inside").write_bytes(b"x")
    else:
        unlink = Path.unlink

        def refuse(path: Path, missing_ok: bool = False) -> None:
            if path == stuck.resolve():
                raise PermissionError(13, "Permission denied", str(path))
            unlink(path, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", refuse)
    world.files["b1"].unlink()
    result = run_cli(app, ["retention"])
    assert result.exit_code == 1, result.output
    q = world.questions
    assert "done: 2 files removed, 4 recordings marked deleted, 2 callers" in result.output
    with db() as session:
        states = {name: session.scalars(select(Recording).where(
            Recording.question_id == q[name])).one() for name in ("a1", "a2", "b1", "c1")}
        stuck_id = states["a2"].id
        # The recording whose file is still there is marked deleted, and keeps its key until
        # the file goes.
        assert (states["a2"].file_path, states["a2"].download_state) == ("2025/a2.wav",
                                                                        RECORDING_DELETED)
        for name in ("a1", "b1", "c1"):
            assert (states[name].file_path, states[name].download_state) == (
                None, RECORDING_DELETED), name
        caller_d = session.get(Caller, world.callers["d"])
        assert caller_d is not None and is_pseudonym(caller_d.phone)
    assert f"skipped recording {stuck_id}: the audio file could not be deleted" in result.output
    assert stuck.exists()
    assert not world.files["a1"].exists() and not world.files["c1"].exists()
    # The next night tries that one again, and only that one.
    again = run_cli(app, ["retention"])
    assert "done: 0 files removed, 0 recordings marked deleted, 0 callers" in again.output
    assert f"skipped recording {stuck_id}: the audio file could not be deleted" in again.output


def test_a_caller_heard_from_between_planning_and_doing_keeps_the_number(
        app: Flask, db: Db, world: World, settings: Settings) -> None:
    settings_now = runtime(app).settings
    with db() as session:
        todo = store.plan(session, utcnow(), settings_now.audio_retention_days,
                          settings_now.phone_retention_days)
    assert [due.caller_id for due in todo.callers] == [world.callers["b"], world.callers["d"]]
    # Before the plan is carried out, d calls and leaves a question; b writes an SMS.
    with db() as session:
        caller_d = session.get(Caller, world.callers["d"])
        assert caller_d is not None
        add_question(session, caller_d, "d1", settings.audio_dir, status="waiting",
                     created_days_ago=0)
        touch_caller(session, PHONES["b"], utcnow())
    with db() as session:
        outcome = store.apply(session, todo, audio=runtime(app).audio,
                              key=settings_now.ensure_secret_key().encode(), now=utcnow())
    assert outcome.callers_pseudonymised == 0
    with db() as session:
        phones = {name: session.scalars(select(Caller.phone).where(Caller.id == caller_id)).one()
                  for name, caller_id in world.callers.items()}
        assert phones == PHONES
        assert set(session.scalars(select(SmsMessage.phone))) == {PHONES["b"]}


def test_retention_goes_in_batches_of_its_own_transactions(
        app: Flask, db: Db, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 2: five callers due (b, d and three more) in three transactions, four
    recordings in two; every due caller is pseudonymised, c (a question still waiting) and
    e (heard from lately) are not, and the open questions' audio stays."""
    now = utcnow()
    with db() as session:
        more = [Caller(phone=f"+7702000000{i}", first_seen=now - 700 * DAY,
                       last_seen=now - 400 * DAY) for i in range(3)]
        session.add_all(more)
        session.flush()
        extra = [caller.id for caller in more]
    batches: list[tuple[int, int]] = []
    apply = store.apply

    def spy(session: Session, todo: store.Plan, **kwargs: Any) -> store.Outcome:
        batches.append((len(todo.audio), len(todo.callers)))
        return apply(session, todo, **kwargs)

    units: list[bool] = []  # read_only, for each unit of work retention opens

    def unit(*args: Any, **kwargs: Any) -> Any:
        units.append(bool(kwargs.get("read_only")))
        return unit_of_work(*args, **kwargs)

    monkeypatch.setattr(store, "apply", spy)
    monkeypatch.setattr(cli_retention, "unit_of_work", unit)
    run = run_retention(runtime(app), batch_size=2)
    assert run.outcome is not None
    assert (run.outcome.recordings_deleted, run.outcome.callers_pseudonymised) == (4, 5)
    assert batches == [(2, 0), (2, 0), (0, 2), (0, 2), (0, 1)]
    # A read-only transaction for the plan, one for the files an earlier run left, then one
    # transaction for each batch, and after each with recordings a read-only one for the
    # files to remove (each file's key is then forgotten in a transaction of the store's);
    # then the Twilio step's: a read-only one to find the recordings, one for each (these
    # sids are not Twilio's: no copy there to delete, only noted).
    assert units == ([True, True] + [False, True] * 2 + [False] * 3 + [True]
                     + [False] * 4)
    assert run.twilio is not None and (run.twilio.deleted, run.twilio.failed) == (0, 0)
    key = runtime(app).settings.ensure_secret_key().encode()
    with db() as session:
        for caller_id in [world.callers["b"], world.callers["d"], *extra]:
            caller = session.get(Caller, caller_id)
            assert caller is not None and is_pseudonym(caller.phone), caller_id
        assert session.get(Caller, world.callers["d"]).phone == pseudonym(  # type: ignore[union-attr]
            PHONES["d"], key)
        for name in ("c", "e", "a"):
            caller = session.get(Caller, world.callers[name])
            assert caller is not None and caller.phone == PHONES[name], name
    assert world.files["c2"].exists() and world.files["x"].exists()


def test_a_batch_checks_its_recordings_again(app: Flask, db: Db, world: World) -> None:
    """A recording planned for deletion whose question is no longer closed long enough when
    its batch comes (here: its closing date moved) is left alone, file and row."""
    settings_now = runtime(app).settings
    with db() as session:
        todo = store.plan(session, utcnow(), settings_now.audio_retention_days,
                          settings_now.phone_retention_days)
    assert len(todo.audio) == 4
    with db() as session:
        question = session.get(Question, world.questions["a1"])
        assert question is not None
        question.closed_at = utcnow()
    outcome = store.Outcome()
    for batch in store.batches(todo, 1):
        with db() as session:
            store.apply(session, batch, audio=runtime(app).audio,
                        key=settings_now.ensure_secret_key().encode(), now=utcnow(),
                        outcome=outcome)
    assert (outcome.recordings_deleted, outcome.callers_pseudonymised) == (3, 2)
    with db() as session:  # the files go after the batches' commits
        pending = store.files_to_remove(session)
    store.remove_files(runtime(app).sessions, pending, [runtime(app).audio], outcome)
    assert world.files["a1"].exists() and not world.files["a2"].exists()


def test_a_dry_run_does_not_wait_for_the_writers(app: Flask, world: World,
                                                 settings: Settings) -> None:
    """The plan is read in a read-only transaction: on SQLite a dry run neither queues behind
    a writer nor holds the webhooks' writes up."""
    if not settings.database_url.startswith("sqlite:"):
        pytest.skip("the writer queue is SQLite's")
    run = beside_held_writer_queue(settings.database_url,
                                   lambda: run_retention(runtime(app), dry_run=True))
    assert run.outcome is None
    assert [due.caller_id for due in run.plan.callers] == [world.callers["b"],
                                                           world.callers["d"]]


def test_twilios_copy_goes_after_ours(make_app: Callable[[Settings], Flask], db: Db,
                                      settings: Settings) -> None:
    """Retention deletes a recording at Twilio once our audio of it is gone, through the twilio
    client against a local stand-in for the REST API: a 404 (deleted already) counts as done,
    a 500 is tried again by the next run; open and recent questions' recordings stay there."""
    with TwilioApi(ACCOUNT_SID, AUTH_TOKEN) as api:
        app = make_app(settings.override(twilio_api_url=api.url))
        sids = {name: "RE" + uuid.uuid4().hex for name in ("old", "gone", "flaky", "open",
                                                           "recent")}
        for name in ("old", "flaky", "open", "recent"):
            api.add_recording(sids[name], "CA" + uuid.uuid4().hex, "https://api.twilio.com/x",
                              utcnow() - 500 * DAY)
        with db() as session:
            caller = Caller(phone=PHONES["a"])
            session.add(caller)
            shape = {"old": (400, "closed"), "gone": (400, "closed"), "flaky": (400, "closed"),
                     "open": (None, "waiting"), "recent": (10, "closed")}
            for name, (days, status) in shape.items():
                question, _path = add_question(session, caller, name, settings.audio_dir,
                                               status=status, closed_days_ago=days)
                assert question.recording is not None
                question.recording.recording_sid = sids[name]
        deletes: list[str] = []

        def deleted_at() -> dict[str, bool]:
            with db() as session:
                return {name: session.scalars(select(Recording.twilio_deleted_at).where(
                    Recording.recording_sid == sid)).one() is not None
                    for name, sid in sids.items()}

        dry = run_cli(app, ["retention", "--dry-run"])
        assert "Twilio's copies: up to 3 recordings to delete there" in dry.output
        assert api.requests == []
        api.fail_next(twilio_error(500, 20500, "Internal Server Error"),
                      resource=RECORDING_DELETE)  # the first DELETE: "old" (lowest id)
        first = run_cli(app, ["retention"])
        assert first.exit_code == 0, first.output
        deletes = [r.path.rsplit("/", 1)[1].removesuffix(".json") for r in api.requests
                   if r.method == "DELETE"]
        assert deletes == [sids["old"], sids["gone"], sids["flaky"]]
        assert all(r.authorised for r in api.requests)
        assert "Twilio's copies: 2 recordings deleted there, 1 failed" in first.output
        assert deleted_at() == {"old": False, "gone": True, "flaky": True, "open": False,
                                "recent": False}
        assert run_cli(app, ["retention"]).exit_code == 0  # the next night
        assert deleted_at()["old"] is True
        assert {r["sid"] for r in api.recordings} == {sids["open"], sids["recent"]}
        assert len([r for r in api.requests if r.method == "DELETE"]) == 4


def test_a_demo_or_an_account_without_a_sid_asks_twilio_nothing(
        make_app: Callable[[Settings], Flask], db: Db, settings: Settings) -> None:
    with TwilioApi(ACCOUNT_SID, AUTH_TOKEN) as api:
        for i, changed in enumerate(({"demo": True}, {"twilio_account_sid": ""})):
            app = make_app(settings.override(twilio_api_url=api.url, **changed))
            with db() as session:
                question, _path = add_question(session, Caller(phone=PHONES["bc"[i]]),
                                               f"q{i}", settings.audio_dir,
                                               closed_days_ago=400)
                assert question.recording is not None
                question.recording.recording_sid = "RE" + uuid.uuid4().hex
            run = run_retention(runtime(app))
            assert run.twilio is not None and run.twilio.skipped in (
                "demo mode", "no TWILIO_ACCOUNT_SID")
        assert api.requests == []


@pytest.mark.parametrize(("answers", "asked", "stopped"), [
    ([twilio_error(500, 20500, "Internal Server Error")] * 5, 5, "5 failures in a row"),
    ([twilio_error(401, 20003, "Authenticate")], 1, "Twilio refused the account (401)"),
])
def test_a_run_stops_asking_a_twilio_that_keeps_failing(
        make_app: Callable[[Settings], Flask], db: Db, settings: Settings,
        answers: list[tuple[int, dict[str, Any]]], asked: int, stopped: str) -> None:
    with TwilioApi(ACCOUNT_SID, AUTH_TOKEN) as api:
        app = make_app(settings.override(twilio_api_url=api.url))
        with db() as session:
            caller = Caller(phone=PHONES["a"])
            for i in range(6):
                question, _path = add_question(session, caller, f"f{i}", settings.audio_dir,
                                               closed_days_ago=400)
                assert question.recording is not None
                question.recording.recording_sid = "RE" + uuid.uuid4().hex
        api.fail_next(*answers, resource=RECORDING_DELETE)
        run = run_retention(runtime(app))
        assert run.twilio is not None
        assert (run.twilio.failed, run.twilio.deleted, run.twilio.skipped) == (
            asked, 0, stopped)
        assert len([r for r in api.requests if r.method == "DELETE"]) == asked


def test_a_run_stops_asking_twilio_at_its_time_limit(
        make_app: Callable[[Settings], Flask], db: Db, settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow Twilio must not hold a worker thread for hours: past the run's time limit it
    stops, and the next night goes on."""
    monkeypatch.setattr(cli_retention, "TWILIO_SECONDS_PER_RUN", 0.0)
    with TwilioApi(ACCOUNT_SID, AUTH_TOKEN) as api:
        app = make_app(settings.override(twilio_api_url=api.url))
        with db() as session:
            question, _path = add_question(session, Caller(phone=PHONES["a"]), "slow",
                                           settings.audio_dir, closed_days_ago=400)
            assert question.recording is not None
            question.recording.recording_sid = "RE" + uuid.uuid4().hex
        run = run_retention(runtime(app))
        assert run.twilio is not None and run.twilio.skipped == "time limit (0 s)"
        assert api.requests == []

