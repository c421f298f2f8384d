"""The `hotline` command: content check, prompt rendering, the queue, the caller simulator."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import requests
import yaml
from flask import Flask

from flows.content import DEFAULT_CONTENT_DIR
from hotline.app import create_app
from hotline.config import Settings
from tests.support import free_port, run_cli, runtime

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The commands do not depend on the backend."""
    return f"sqlite:///{tmp_path / 'hotline.sqlite3'}"


def test_flows_check_accepts_the_shipped_content() -> None:
    result = run_cli(None, ["flows", "check"])
    assert result.exit_code == 0
    assert result.output.startswith("content OK: 2 languages")


def test_flows_check_names_file_and_key_and_fails(tmp_path: Path) -> None:
    content = tmp_path / "content"
    shutil.copytree(DEFAULT_CONTENT_DIR, content)
    data = yaml.safe_load((content / "ru.yaml").read_text("utf-8"))
    del data["prompts"]["topic.documents.todo"]
    (content / "ru.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    result = run_cli(None, ["flows", "check", "--content", str(content)])
    assert result.exit_code == 1
    assert "ru.yaml: prompts.topic.documents.todo: missing translation" in result.output


def test_flows_check_warns_of_a_stale_pronunciation_and_passes(tmp_path: Path) -> None:
    content = tmp_path / "content"
    shutil.copytree(DEFAULT_CONTENT_DIR, content)
    data = yaml.safe_load((content / "ru.yaml").read_text("utf-8"))
    data["pronounce"]["1414"] = "один-четыре-один-четыре"  # a prompt says it: no warning
    data["pronounce"]["ГЦВП"] = "гэ-цэ-вэ-пэ"  # no prompt mentions it (any more)
    (content / "ru.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    result = run_cli(None, ["flows", "check", "--content", str(content)])
    assert result.exit_code == 0
    assert "warning: ru.yaml: pronounce.ГЦВП: no spoken prompt contains it" in result.output
    assert "1414" not in result.output
    assert "content OK" in result.output


def test_the_app_refuses_to_start_on_invalid_content(settings: Settings, tmp_path: Path) -> None:
    from flows.content import ContentError

    content = tmp_path / "content"
    shutil.copytree(DEFAULT_CONTENT_DIR, content)
    (content / "kk.yaml").write_text("language: kk\nprompts: {}\n", "utf-8")
    with pytest.raises(ContentError, match="kk.yaml: prompts.greeting: missing translation"):
        create_app(settings.override(content_dir=content))


def test_the_app_refuses_to_start_without_a_token(settings: Settings) -> None:
    from hotline.config import ConfigError

    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        create_app(settings.override(twilio_auth_token=""))


def test_a_postgresql_deployment_without_a_secret_key_is_warned_about(
        settings: Settings, make_app: Callable[[Settings], Flask],
        caplog: pytest.LogCaptureFixture) -> None:
    """Each machine would make its own key: sessions and pseudonyms would differ between them."""
    postgres = "postgresql://postgres@127.0.0.1:5432/postgres"

    def warned() -> bool:
        return any("SECRET_KEY is not set" in r.getMessage() for r in caplog.records)

    make_app(settings.override(database_url=postgres, secret_key=""))
    assert warned()
    caplog.clear()
    make_app(settings.override(database_url=postgres, secret_key="s" * 64))
    make_app(settings.override(secret_key=""))  # SQLite: one machine, one key file
    assert not warned()


def test_a_worker_without_a_secret_key_is_warned_about_too(
        settings: Settings, make_app: Callable[[Settings], Flask],
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker pseudonymises numbers (retention) and sends the SMS: a worker machine
    without SECRET_KEY would make its own key, so it says so as it starts, as the web does;
    and what a production worker lacks of Twilio's settings."""
    from click.testing import CliRunner

    from hotline import cli
    from hotline.jobs import huey

    class Consumer:
        def run(self) -> None:
            """The consumer would run until stopped: here it returns at once."""

    monkeypatch.setattr(huey, "create_consumer", lambda **_options: Consumer())
    postgres = "postgresql://postgres@127.0.0.1:5432/postgres"
    make_app(settings.override(database_url=postgres, secret_key="", demo=False,
                               twilio_account_sid=""))  # the worker uses its runtime
    caplog.clear()
    result = CliRunner().invoke(cli.worker, [])
    assert result.exit_code == 0, result.output
    said = [r.getMessage() for r in caplog.records]
    assert any("SECRET_KEY is not set" in m for m in said), said
    assert any("TWILIO_ACCOUNT_SID is not set" in m for m in said), said


def test_a_production_start_says_which_twilio_settings_are_missing(
        settings: Settings, make_app: Callable[[Settings], Flask],
        caplog: pytest.LogCaptureFixture) -> None:
    """The token alone lets the hotline start (incoming calls work); what else a deployment
    lacks is said at start-up, not found when a callback has no caller ID."""
    missing = ("TWILIO_ACCOUNT_SID is not set", "TWILIO_PHONE_NUMBER is not set",
               "PUBLIC_BASE_URL is not set")

    def warned() -> list[str]:
        return [m for m in missing if any(m in r.getMessage() for r in caplog.records)]

    make_app(settings.override(twilio_account_sid="", twilio_phone_number=""))
    assert warned() == list(missing)
    caplog.clear()
    make_app(settings.override(public_base_url="https://hotline.example.kz"))
    assert warned() == []


def test_a_production_start_names_the_examples_values_left_in(
        settings: Settings, make_app: Callable[[Settings], Flask],
        caplog: pytest.LogCaptureFixture) -> None:
    """deploy/hotline.env.example's address and number, left in: the app starts (they are
    well-formed) but says at once that every call and callback would fail with them."""
    from dotenv import dotenv_values

    from hotline.config import EXAMPLE_PHONE_NUMBER, EXAMPLE_PUBLIC_BASE_URL

    example = dotenv_values(Path(__file__).parents[2] / "deploy" / "hotline.env.example")
    assert (example["PUBLIC_BASE_URL"], example["TWILIO_PHONE_NUMBER"]) == (
        EXAMPLE_PUBLIC_BASE_URL, EXAMPLE_PHONE_NUMBER)
    make_app(settings.override(public_base_url=EXAMPLE_PUBLIC_BASE_URL,
                               twilio_phone_number=EXAMPLE_PHONE_NUMBER))
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("PUBLIC_BASE_URL is still the example's https://hotline.example.kz")
               for m in said), said
    assert any(m.startswith("TWILIO_PHONE_NUMBER is still the example's +77170000000")
               for m in said), said
    caplog.clear()
    make_app(settings.override(public_base_url="https://hotline.halyq.kz",
                               twilio_phone_number="+77172000000"))
    assert not any("still the example's" in r.getMessage() for r in caplog.records)


def test_a_refused_signature_names_the_address_it_was_checked_for(
        settings: Settings, make_app: Callable[[Settings], Flask],
        caplog: pytest.LogCaptureFixture) -> None:
    """Twilio signs the address it called: a PUBLIC_BASE_URL that is not it refuses every call,
    and the log line says for which address the signature was checked (else it reads as a
    wrong token)."""
    from twilio.request_validator import RequestValidator

    app = make_app(settings.override(public_base_url="https://hotline.example.kz"))
    form = {"CallSid": "CA" + "1" * 32, "From": "+77011234567", "To": "+77000000000"}
    signature = RequestValidator(settings.twilio_auth_token).compute_signature(
        "https://hotline.halyq.kz/voice/incoming", form)
    refused = app.test_client().post("/voice/incoming", data=form,
                                     headers={"X-Twilio-Signature": signature})
    assert refused.status_code == 403
    assert any(r.getMessage().startswith(
        "refused a webhook with a bad signature: /voice/incoming (checked for "
        "https://hotline.example.kz/voice/incoming") for r in caplog.records)


def test_a_proxy_the_settings_do_not_declare_is_warned_about_once(
        settings: Settings, make_app: Callable[[Settings], Flask],
        caplog: pytest.LogCaptureFixture) -> None:
    """Behind an undeclared proxy every visitor has the proxy's address (one guesser would
    lock every consultant out): the first request that shows it says so."""
    def warnings() -> int:
        return sum("HOTLINE_PROXY_HOPS is 0" in r.getMessage() for r in caplog.records)

    client = make_app(settings).test_client()
    assert client.get("/health").status_code == 200
    assert warnings() == 0
    for address in ("203.0.113.9", "203.0.113.10"):
        client.get("/health", headers={"X-Forwarded-For": address})
    assert warnings() == 1
    declared = make_app(settings.override(proxy_hops=1)).test_client()
    declared.get("/health", headers={"X-Forwarded-For": "203.0.113.9"})
    assert warnings() == 1


def test_a_setting_that_is_not_a_number_is_named_not_a_traceback(tmp_path: Path) -> None:
    from hotline.config import ConfigError

    with pytest.raises(ConfigError, match="HOTLINE_SESSION_MINUTES must be a number, like 60, "
                                          "not '60m'"):
        Settings.from_env({"HOTLINE_SESSION_MINUTES": "60m"})
    # The worker reads its settings as it starts (and as it imports the job queue).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTLINE_", "TWILIO_"))}
    env.update(HOTLINE_DEMO="1", HOTLINE_DATA_DIR=str(tmp_path / "instance"),
               HOTLINE_DOWNLOAD_BACKOFF="2s")
    worker = subprocess.run([str(Path(sys.executable).parent / "hotline"), "worker"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert worker.returncode == 1
    assert "Traceback" not in worker.stderr
    assert "Error: HOTLINE_DOWNLOAD_BACKOFF must be a number, like 2, not '2s'." in worker.stderr


def test_help_without_settings_lists_the_commands_and_says_why_in_one_line(
        tmp_path: Path) -> None:
    """An operator's very first command, before any setting: `hotline --help` lists every
    command (db upgrade works without the app) and says in one line what the app lacks; a
    command that needs the app fails with that line, not a traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTLINE_", "TWILIO_"))}
    env.update(HOTLINE_DATA_DIR=str(tmp_path / "instance"))
    hotline = str(Path(sys.executable).parent / "hotline")
    shown = subprocess.run([hotline, "--help"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120, check=False)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert "Error: TWILIO_AUTH_TOKEN is not set" in shown.stderr
    listed = shown.stdout.split("Commands:", 1)[1].split()
    for command in ("db", "prompts", "users", "worker", "retention", "backup"):
        assert command in listed, shown.stdout
    needs_app = subprocess.run([hotline, "prompts", "render"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120, check=False)
    assert needs_app.returncode == 1 and "Traceback" not in needs_app.stderr
    assert [line for line in needs_app.stderr.splitlines() if line.startswith("Error:")] == [
        line for line in needs_app.stderr.splitlines() if "TWILIO_AUTH_TOKEN is not set" in line]


@pytest.mark.parametrize("database", ["unreachable", "never migrated"])
def test_a_database_that_cannot_be_used_is_one_line_not_a_traceback(
        tmp_path: Path, database: str) -> None:
    """An operator's first commands on a new server: the database down (a port nobody
    listens on) or never migrated (a new SQLite file) is said in one line, with what to do."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTLINE_", "TWILIO_"))}
    env.update(HOTLINE_DEMO="1", HOTLINE_DATA_DIR=str(tmp_path / "instance"))
    if database == "unreachable":
        env["DATABASE_URL"] = "postgresql+psycopg://hotline@127.0.0.1:1/hotline"
    done = subprocess.run([str(Path(sys.executable).parent / "hotline"), "users", "list"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    said = "Connection refused" if database == "unreachable" else "no such table"
    [line] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert "the database could not be used" in line and said in line
    assert "hotline db upgrade" in line


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql",
                                                             marks=pytest.mark.postgres)])
def test_health_before_db_upgrade_is_the_one_line_hint(
        tmp_path: Path, database: str, request: pytest.FixtureRequest) -> None:
    """`hotline health` on a database never migrated (a new SQLite file, an empty PostgreSQL
    database): the one-line hint of `users list`, exit 1; it printed "ok database", "FAIL
    backlogs could not be read" and a logged traceback, no hint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTLINE_", "TWILIO_"))}
    env.update(HOTLINE_DEMO="1", HOTLINE_DATA_DIR=str(tmp_path / "instance"), REDIS_URL="",
               DATABASE_URL="" if database == "sqlite"
               else request.getfixturevalue("postgres_url"))
    for json_too in ([], ["--json"]):
        done = subprocess.run([str(Path(sys.executable).parent / "hotline"), "health",
                               *json_too], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stdout == ""  # no "ok database" above a failed backlogs check
        [line] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert line == ("Error: the database could not be used: it has no tables (never "
                        "migrated). Is DATABASE_URL right? A database never set up needs "
                        "`hotline db upgrade`.")


def test_health_on_a_database_that_does_not_answer_is_still_its_checks(
        tmp_path: Path) -> None:
    """No schema hint where the database cannot be asked: the checks say it does not answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTLINE_", "TWILIO_"))}
    env.update(HOTLINE_DEMO="1", HOTLINE_DATA_DIR=str(tmp_path / "instance"), REDIS_URL="",
               DATABASE_URL="postgresql+psycopg://hotline@127.0.0.1:1/hotline")
    done = subprocess.run([str(Path(sys.executable).parent / "hotline"), "health"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 1
    assert done.stdout.splitlines()[0].split() == [
        "FAIL", "database", "does", "not", "answer", "(OperationalError)"]
    assert "hotline db upgrade" not in done.stderr


def test_prompts_render_makes_slow_telephone_audio_for_every_kazakh_prompt(app: Flask) -> None:
    result = run_cli(app, ["prompts", "render"])
    assert result.exit_code == 0, result.output
    rt = runtime(app)
    prompts = list(rt.flow.all_prompts("kk"))
    files = [rt.prompts.file_for(p) for p in prompts]
    assert all(files)
    with wave.open(str(files[0]), "rb") as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (8000, 1, 2)
    again = run_cli(app, ["prompts", "render"])
    assert "every prompt already has audio" in again.output


def test_espeak_is_given_the_spoken_form_of_each_prompt(app: Flask, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The real espeak-ng, behind a wrapper that notes what it was asked to say: the Kazakh
    abbreviations and the number as the content's pronunciation table says them."""
    real = shutil.which("espeak-ng")
    assert real is not None
    said = tmp_path / "said.txt"
    wrapper = tmp_path / "bin" / "espeak-ng"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nfor a; do last="$a"; done\n'
                       f'printf "%s\\n" "$last" >> "{said}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    result = run_cli(app, ["prompts", "render", "--language", "kk"])
    assert result.exit_code == 0, result.output
    texts = said.read_text(encoding="utf-8")
    assert "бір, төрт, бір, төрт нөміріне" in texts
    assert "Халыққа қызмет көрсету орталығына" in texts
    assert "1414" not in texts and "ХҚКО" not in texts
    rt = runtime(app)
    todo = rt.flow.prompt("kk", "topic.documents.todo")
    assert rt.prompts.file_for(todo) == rt.prompts.rendered_path(todo)
    assert todo.audio_name.endswith(".wav") and "1414" in todo.text


def procfile(process: str) -> str:
    """The command of one of the Procfile's processes."""
    return next(line.removeprefix(f"{process}:").strip()
                for line in (ROOT / "Procfile").read_text().splitlines()
                if line.startswith(f"{process}:"))


def procfile_env(data_dir: Path, path: str) -> dict[str, str]:
    """A deployment's environment: its own data folder, the default SQLite database."""
    return {**os.environ, "HOTLINE_DEMO": "1", "HOTLINE_DATA_DIR": str(data_dir),
            "DATABASE_URL": "", "REDIS_URL": "", "PATH": path}


def test_every_process_reads_the_working_folders_env_file_before_it_makes_the_queue(
        tmp_path: Path) -> None:
    """gunicorn imports the app (and with it the job queue) before any factory runs: the web
    process must put its jobs where the worker, which read the same .env, takes them."""
    (tmp_path / ".env").write_text(
        "HOTLINE_DATA_DIR=from-dotenv\nHOTLINE_QUEUE_NAME=dotenv_queue\n"
        "TWILIO_PHONE_NUMBER=+77000000000\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HOTLINE_", "TWILIO_", "REDIS_", "DATABASE_"))}
    env["TWILIO_PHONE_NUMBER"] = "+77001112233"  # set in the environment: wins over the file
    shown = subprocess.run(
        [sys.executable, "-c",
         "import hotline.app as a; from hotline.config import Settings; s = Settings.from_env()"
         "; print(a.jobs.huey.name, a.jobs.huey.storage.filename, s.data_dir,"
         " s.twilio_phone_number)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True)
    data_dir = tmp_path / "from-dotenv"
    assert shown.stdout.split() == ["dotenv_queue", str(data_dir / "jobs.sqlite3"),
                                    str(data_dir), "+77001112233"]


@pytest.mark.parametrize(("bind", "expected"), [(None, "127.0.0.1:5000"),
                                               ("0.0.0.0", "0.0.0.0:5000")])
def test_the_procfiles_web_server_listens_on_loopback_unless_told_otherwise(
        bind: str | None, expected: str) -> None:
    """gunicorn behind a proxy on the same machine must not be reachable past it (forged
    X-Forwarded-For; demo mode's /phone signs webhooks for anyone): HOTLINE_BIND opens it."""
    _setup, _sep, server = procfile("web").rpartition(";")
    env = {k: v for k, v in os.environ.items() if k not in ("HOTLINE_BIND", "PORT")}
    if bind is not None:
        env["HOTLINE_BIND"] = bind
    shown = subprocess.run(["/bin/sh", "-c", server.replace("exec gunicorn", "echo", 1)],
                           env=env, capture_output=True, text=True, timeout=30, check=True)
    words = shown.stdout.split()
    assert words[words.index("--bind") + 1] == expected


def test_the_procfiles_web_process_renders_missing_prompts_before_it_serves(
        tmp_path: Path) -> None:
    """Each web machine has its own data folder: `web:` renders what is missing there (after
    a content change, say) before gunicorn starts, so Kazakh callers never hear the Russian
    voice read Kazakh text."""
    setup, _sep, server = procfile("web").rpartition(";")
    assert server.split()[:2] == ["exec", "gunicorn"]
    env = procfile_env(tmp_path / "web", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    done = subprocess.run(["/bin/sh", "-c", setup], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    again = run_cli(None, ["prompts", "render"], env={k: env[k] for k in (
        "HOTLINE_DEMO", "HOTLINE_DATA_DIR", "DATABASE_URL", "REDIS_URL")})
    assert "every prompt already has audio" in again.output


def test_the_web_process_serves_even_where_prompts_cannot_be_rendered(
        tmp_path: Path) -> None:
    """A web machine without espeak-ng and sox: the render fails loudly, the hotline still
    starts (missing Kazakh prompts are read with the Russian voice, and a warning logged)."""
    # Only the project's own commands on the PATH: no espeak-ng, no sox.
    env = procfile_env(tmp_path / "web", str(Path(sys.executable).parent))
    port = free_port()
    env["PORT"] = str(port)
    subprocess.run(["/bin/sh", "-c", procfile("release")], env=env, check=True,
                   capture_output=True, timeout=120)
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        web = subprocess.Popen(["/bin/sh", "-c", procfile("web")], env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, status = time.monotonic() + 60, None
        while status != 200 and time.monotonic() < deadline and web.poll() is None:
            time.sleep(0.2)
            with contextlib.suppress(requests.RequestException):
                status = requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code
        output = log.read_text(errors="replace")
        assert status == 200, output
        assert "espeak-ng and sox are needed" in output
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)


@pytest.mark.parametrize("present", [(), ("espeak-ng",)])
def test_rendering_without_espeak_or_sox_says_what_is_missing_in_one_line(
        app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        present: tuple[str, ...]) -> None:
    """Missing tools are the command's one-line error (which, and the Debian packages), exit
    1: it was a 49-line traceback."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in present:
        real = shutil.which(tool)
        assert real is not None
        (folder / tool).symlink_to(real)
    monkeypatch.setenv("PATH", str(folder))
    result = run_cli(app, ["prompts", "render"])
    assert result.exit_code == 1
    missing = "sox" if present else "espeak-ng and sox"
    assert result.output == (
        "Error: espeak-ng and sox are needed to render prompts; not found on PATH: "
        f"{missing} (Debian: apt-get install espeak-ng sox)\n")


def test_rendering_needs_no_tools_when_every_prompt_has_audio(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_cli(app, ["prompts", "render"]).exit_code == 0
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no espeak-ng, no sox
    again = run_cli(app, ["prompts", "render"])
    assert again.exit_code == 0 and "every prompt already has audio" in again.output


def test_a_recording_made_for_an_older_text_stops_playing_when_the_text_changes(
        app: Flask, tmp_path: Path, question_wav: Path) -> None:
    """The lawyers correct an explainer: the person's recording of the old text would go on
    telling callers the old law. The current text's rendered audio plays until it is recorded
    again, and `prompts render` says so."""
    rt = runtime(app)
    prompt = rt.flow.prompt("kk", "topic.pension.fact")
    installed = run_cli(app, ["prompts", "add-recording", "kk", "topic.pension.fact",
                              str(question_wav)])
    assert installed.exit_code == 0, installed.output
    assert rt.prompts.file_for(prompt) == rt.prompts.recorded_path(prompt)
    assert rt.prompts.recorded_path(prompt).read_bytes() == question_wav.read_bytes()

    corrected = replace(prompt, text=prompt.text + " Өзгерді.")
    assert rt.prompts.recording_state(corrected) == "outdated"
    assert rt.prompts.file_for(corrected) is None  # not the old words, until rendered
    rt.prompts.render_missing([corrected])
    assert rt.prompts.file_for(corrected) == rt.prompts.rendered_path(corrected)
    # The same words with other line breaks are the same text.
    assert rt.prompts.recording_state(
        replace(prompt, text=prompt.text.replace(" ", "\n  "))) == "current"
    # A recording put there by hand, without its text, plays as before, and is named.
    other = rt.flow.prompt("kk", "greeting")
    rt.prompts.recorded_path(other).write_bytes(question_wav.read_bytes())
    assert rt.prompts.file_for(other) == rt.prompts.recorded_path(other)
    report = run_cli(app, ["prompts", "render"]).output
    assert "kk greeting: a person's recording without the text" in report


def test_the_command_refuses_what_is_not_a_prompt_or_not_a_wav(
        app: Flask, tmp_path: Path, question_wav: Path) -> None:
    not_wav = tmp_path / "note.wav"
    not_wav.write_text("hello")
    for args, said in [(["kk", "no.such.key", str(question_wav)], "no prompt 'no.such.key'"),
                       (["xx", "greeting", str(question_wav)], "no language 'xx'"),
                       (["kk", "greeting", str(not_wav)], "is not a WAV file")]:
        result = run_cli(app, ["prompts", "add-recording", *args])
        assert result.exit_code == 1 and said in result.output, result.output
    greeting = runtime(app).flow.prompt("kk", "greeting")
    assert not runtime(app).prompts.recorded_path(greeting).exists()


def test_a_recorded_prompt_wins_over_a_rendered_one(app: Flask, tmp_path: Path) -> None:
    rt = runtime(app)
    prompt = rt.flow.prompt("kk", "greeting")
    human = rt.prompts.recorded_path(prompt)
    human.parent.mkdir(parents=True)
    human.write_bytes(b"RIFF....WAVE")
    assert rt.prompts.file_for(prompt) == human
    run_cli(app, ["prompts", "render"])
    assert rt.prompts.file_for(prompt) == human


def test_queue_is_empty_at_first(app: Flask) -> None:
    assert run_cli(app, ["queue"]).output.strip() == "no questions are waiting"
    assert json.loads(run_cli(app, ["queue", "--json"]).output) == []


def test_hotline_call_in_demo_mode_walks_a_russian_call(tmp_path: Path,
                                                        question_wav: Path) -> None:
    env = {"HOTLINE_DEMO": "1", "HOTLINE_DATA_DIR": str(tmp_path / "demo"),
           "DATABASE_URL": "", "REDIS_URL": ""}
    assert run_cli(None, ["db", "upgrade"], env=env).exit_code == 0
    result = run_cli(None, ["call", "--keys", "2 1 2 rec _", "--record", str(question_wav)],
                     env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("SAY  [ru] Для русского языка") for line in lines)
    assert any("[pressed 2]" in line for line in lines)
    assert any("рабочих дней" in line for line in lines)
    assert lines[-1].endswith("keys 2 1 2 _; 1 recording(s)")
    queue = json.loads(run_cli(None, ["queue", "--json"], env=env).output)
    assert [(q["language"], q["topic"], q["download"]) for q in queue] == [
        ("ru", "pension", "stored")]


def test_an_interactive_call_ended_with_ctrl_d_hangs_up(tmp_path: Path) -> None:
    """The end of input at the keypad's prompt is the caller hanging up: the hotline is told
    the call ended (its status callback) and the summary is printed, not click's 'Aborted!'."""
    env = {"HOTLINE_DEMO": "1", "HOTLINE_DATA_DIR": str(tmp_path / "demo"),
           "DATABASE_URL": "", "REDIS_URL": ""}
    assert run_cli(None, ["db", "upgrade"], env=env).exit_code == 0
    result = run_cli(None, ["call"], env=env, input="2\n")
    assert result.exit_code == 0, result.output
    assert "Aborted!" not in result.output
    assert result.output.splitlines()[-1].endswith("ended (caller); keys 2; 0 recording(s)")
    with contextlib.closing(sqlite3.connect(tmp_path / "demo" / "hotline.sqlite3")) as db:
        assert db.execute("SELECT status FROM calls").fetchall() == [("completed",)]


@pytest.mark.parametrize("encoding", [["-b", "24"], ["-e", "floating-point", "-b", "32"]],
                         ids=["24-bit", "float32"])
def test_hotline_call_says_any_wav_the_transcriber_reads(
    tmp_path: Path, question_wav: Path, encoding: list[str]
) -> None:
    """sox and Audacity write 24-bit and float WAV as WAVE_FORMAT_EXTENSIBLE or IEEE float,
    which the stdlib `wave` refuses (a traceback mid-call); the hotline's transcriber reads
    them, so the simulator says them, with their length."""
    studio = tmp_path / "studio.wav"
    subprocess.run(["sox", str(question_wav), "-D", *encoding, str(studio)], check=True)
    env = {"HOTLINE_DEMO": "1", "HOTLINE_DATA_DIR": str(tmp_path / "demo"),
           "DATABASE_URL": "", "REDIS_URL": ""}
    assert run_cli(None, ["db", "upgrade"], env=env).exit_code == 0
    result = run_cli(None, ["call", "--keys", "2 1 2 rec _", "--record", str(studio)], env=env)
    assert result.exit_code == 0, result.output
    assert "[records studio.wav, " in result.output
    queue = json.loads(run_cli(None, ["queue", "--json"], env=env).output)
    with wave.open(str(question_wav), "rb") as plain:
        seconds = max(1, round(plain.getnframes() / plain.getframerate()))
    assert [(q["download"], q["duration"]) for q in queue] == [("stored", seconds)]


def test_hotline_call_refuses_a_record_file_the_hotline_cannot_take_before_calling(
    tmp_path: Path, question_wav: Path
) -> None:
    """An MP3, a text file or a damaged WAV: one usage line (exit 2) before the call starts,
    not a traceback after the caller has walked the menus."""
    mp3 = tmp_path / "question.mp3"
    subprocess.run(["sox", str(question_wav), str(mp3)], check=True)
    notes = tmp_path / "notes.txt"
    notes.write_text("the caller's question, typed\n", "utf-8")
    damaged = tmp_path / "damaged.wav"
    damaged.write_bytes(question_wav.read_bytes()[:30])
    env = {"HOTLINE_DEMO": "1", "HOTLINE_DATA_DIR": str(tmp_path / "demo"),
           "DATABASE_URL": "", "REDIS_URL": ""}
    for path, said in [
        (mp3, "question.mp3 is not a WAV file: the hotline takes only WAV recordings"),
        (notes, "notes.txt is not a WAV file"),
        (damaged, "damaged.wav is a damaged WAV file"),
    ]:
        result = run_cli(None, ["call", "--keys", "2 1 2 rec _", "--record", str(path)],
                         env=env)
        assert result.exit_code == 2, result.output
        assert f"Error: Invalid value for '--record': {said}" in result.output
        assert "Traceback" not in result.output
        assert "SAY" not in result.output and "PLAY" not in result.output  # no call was made
