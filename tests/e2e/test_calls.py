"""Whole calls, on SQLite and on PostgreSQL: language, topic, explainer, record, the queue."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask

from flows.content import load_content
from flows.engine import Flow
from hotline.config import Settings
from hotline.prompts import PromptLibrary
from hotline.simulator import PhoneSimulator, Speak
from tests.support import CALLER, run_cli, runtime


@pytest.fixture(scope="session")
def rendered_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every Kazakh prompt rendered once with espeak-ng, as `hotline prompts render` does."""
    folder = tmp_path_factory.mktemp("prompts")
    library = PromptLibrary(folder)
    written = library.render_missing(Flow(load_content()).all_prompts("kk"))
    assert written and all(p.stat().st_size > 1000 for p in written)
    return folder


@pytest.fixture
def settings(settings: Settings, rendered_prompts: Path) -> Settings:
    shutil.copytree(rendered_prompts, settings.prompts_dir)
    return settings


def queue_json(app: Flask) -> list[dict]:  # type: ignore[type-arg]
    result = run_cli(app, ["queue", "--json"])
    assert result.exit_code == 0, result.output
    rows: list[dict] = json.loads(result.output)  # type: ignore[type-arg]
    return rows


def test_a_kazakh_call_from_greeting_to_the_queue(
    app: Flask, phone: PhoneSimulator, kazakh_wav: Path
) -> None:
    flow = runtime(app).flow
    log = phone.call(["1", "3", "2", Speak(kazakh_wav), ""])

    assert log.hung_up_by == "hotline"
    heard_kk = [h for h in log.heard if h.language == "kk"]
    # Kazakh has no Twilio voice: every Kazakh prompt is played from an audio file.
    assert heard_kk and all(h.kind == "play" for h in heard_kk)
    assert all(h.language == "ru" for h in log.heard if h.kind == "say")  # the bilingual greeting
    texts = log.texts()
    for part in ("fact", "why", "todo"):
        assert flow.prompt("kk", f"topic.disability.{part}").text in texts
    assert flow.prompt("kk", "record.done").text in texts
    client = app.test_client()
    for url in {h.url for h in heard_kk if h.url}:
        with client.get(urlsplit(url).path) as audio:
            assert audio.status_code == 200 and audio.data[:4] == b"RIFF"

    [row] = queue_json(app)
    assert (row["language"], row["topic"], row["channel"], row["phone"]) == (
        "kk", "disability", "voice", CALLER)
    assert row["download"] == "stored"
    assert Path(row["audio"]).read_bytes() == kazakh_wav.read_bytes()
    assert row["duration"] >= 1


def test_a_russian_call_from_greeting_to_the_queue(
    app: Flask, phone: PhoneSimulator, question_wav: Path
) -> None:
    flow = runtime(app).flow
    log = phone.call(["2", "1", "1", "2", Speak(question_wav), "0", "4", "0", "hangup"])
    texts = log.texts()
    pension = flow.prompt("ru", "topic.pension.fact").speech  # <Say> is given the spoken form
    assert texts.count(pension) == 2  # heard, then heard again with 1
    said = [h for h in log.heard if h.kind == "say"]
    assert said and all(h.language == "ru" for h in said)
    assert flow.prompt("ru", "topic.documents.fact").speech in texts  # back in the menu after 0
    assert log.hung_up_by == "caller"

    [row] = queue_json(app)
    assert (row["language"], row["topic"]) == ("ru", "pension")
    assert Path(row["audio"]).is_file()


def test_a_returning_caller_skips_the_language_menu(app: Flask, phone: PhoneSimulator) -> None:
    flow = runtime(app).flow
    phone.call(["2", "hangup"])
    second = phone.call(["hangup"])
    choose = {flow.prompt(lang, "language.choose").text for lang in ("kk", "ru")}
    assert not choose & set(second.texts())
    assert flow.prompt("ru", "menu.main").text in second.texts()
    # 9 changes the language, and the new choice is remembered.
    phone.call(["9", "1", "hangup"])
    third = phone.call(["hangup"])
    assert flow.prompt("kk", "menu.main").text in third.texts()


def test_a_caller_who_cannot_use_the_keypad_can_still_leave_a_question(
    app: Flask, phone: PhoneSimulator, question_wav: Path
) -> None:
    log = phone.call(["", "", "", Speak(question_wav)])
    flow = runtime(app).flow
    assert flow.prompt("ru", "record.offer").text in log.texts()
    [row] = queue_json(app)
    assert row["language"] is None and row["download"] == "stored"
