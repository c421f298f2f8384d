"""The security review's checks (SECURITY.md): what other test files do not already cover.

Every route is either signed by Twilio or CSRF-protected; recordings are fetched only from
allow-listed hosts, redirects included, and the credentials never leave the original host;
who may open what; body limits; prompt audio and retention stay inside their folders; demo
mode's defaults; and no secret or full phone number in any log record or in the audit log.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hotline.config import ConfigError, Settings
from hotline.simulator import FlaskTransport, MediaServer, PhoneSimulator, Speak, new_sid
from storage.calls import touch_caller
from storage.db import unit_of_work
from storage.models import (
    CHANNEL_VOICE,
    AuditEvent,
    CallbackAttempt,
    Caller,
    Question,
    Recording,
    SmsMessage,
    User,
)
from tests.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BASE_URL,
    CALLER,
    Twilio,
    call_form,
    row_counts,
    run_cli,
    runtime,
    twiml,
)
from tests.twilio_api import TwilioApi
from tests.workspace_support import PASSWORD, Browser, Db, add_user, users_cli

TO_LAWYER = ["2", "0"]  # Russian, then "ask a lawyer" in the main menu
CSRF_REFUSED = "The form was open too long or came from elsewhere."
BASIC = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Routing, signatures and logs do not depend on the backend: SQLite."""
    return f"sqlite:///{tmp_path / 'hotline.sqlite3'}"


def concrete(rule: str) -> str:
    """A rule's path with its arguments filled in."""
    return (rule.replace("<int:question_id>", "1").replace("<int:attempt_id>", "1")
            .replace("<int:user_id>", "1")
            .replace("<call_sid>", "CA" + "0" * 32).replace("<account_sid>", ACCOUNT_SID)
            .replace("<recording_sid>", "RE" + "0" * 32).replace("<path:filename>", "x.css")
            .replace("<language>", "kk").replace("<name>", "x.wav")
            .replace("<any(kk, ru, en):language>", "kk"))


# -- 1. Twilio's signature on every Twilio route; CSRF on every other form -------------------

TWILIO_BLUEPRINTS = {"voice", "sms", "sms_status", "callback_hooks"}
# GET routes anyone may open: prompt audio is public (Twilio's <Play> fetches it unsigned);
# the health checks hold counts and ages only (hotline.health), for a monitor without a login.
PUBLIC_GETS = {"static", "health", "health.ready", "auth.login", "voice.prompt_audio",
               "public.page", "public.page_in", "public.stats"}


def post_routes(app: Flask) -> list[tuple[str, str]]:
    return sorted((rule.endpoint, rule.rule) for rule in app.url_map.iter_rules()
                  if "POST" in (rule.methods or ()))


@pytest.mark.parametrize("mode", ["production", "demo"])
def test_every_post_route_is_signed_by_twilio_or_csrf_protected(
        make_app: Callable[[Settings], Flask], settings: Settings, coordinator_of: Callable[
            [Flask], Browser], mode: str) -> None:
    """A new POST route cannot slip in unprotected: each one refuses a request that has
    neither a Twilio signature nor a CSRF token, and the ones that answer 403 (Twilio's) take a
    valid signature, refuse one made for another URL, and write nothing when refused."""
    app = make_app(settings.override(demo=mode == "demo"))
    browser = coordinator_of(app)  # logged in: the login check is not what refuses
    twilio = Twilio(app)
    signed, protected = set(), set()
    for endpoint, rule in post_routes(app):
        path = concrete(rule)
        assert "<" not in path, f"{rule}: teach concrete() its argument"
        with runtime(app).sessions() as session:
            before = row_counts(session)
        bare = twilio.post(path, {"CallSid": new_sid("CA")}, signature="")
        if bare.status_code == 403:
            signed.add(endpoint)
            assert twilio.post(path, {}, signature="bm90IGEgc2lnbmF0dXJl").status_code == 403
            assert twilio.post(path, {}, signed_url=BASE_URL + path + "/elsewhere"
                               ).status_code == 403, f"{rule}: a signature for another URL"
            with runtime(app).sessions() as session:
                assert row_counts(session) == before, rule
            assert twilio.post(path, {}).status_code != 403, f"{rule}: refuses valid ones too"
        else:
            response = browser.post(path, {})
            assert response.status_code == 400, f"{rule}: neither signed nor CSRF-protected"
            # (the built-in phone's routes answer JSON its page recognises)
            assert CSRF_REFUSED in response.get_data(as_text=True) or (
                response.is_json and (response.json or {}).get("error") == "csrf"), rule
            protected.add(endpoint)
            with runtime(app).sessions() as session:
                assert row_counts(session) == before, rule
    # Exactly the Twilio blueprints' routes are signed.
    assert signed == {e for e, _ in post_routes(app) if e.split(".")[0] in TWILIO_BLUEPRINTS}
    assert "auth.login" in protected and "workspace.claim" in protected


def test_every_get_route_is_public_on_purpose_or_behind_a_login(app: Flask) -> None:
    """GET routes are either in the public list (reviewed) or workspace pages, which
    tests/integration/test_auth.py::test_every_workspace_route_needs_a_login walks."""
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()):
            continue
        assert rule.endpoint in PUBLIC_GETS or rule.endpoint.startswith("workspace."), rule


def test_a_csrf_token_of_another_session_is_refused(app: Flask, db: Db, consultant: str,
                                                     coordinator: str) -> None:
    lawyer, other = Browser(app), Browser(app, ip="203.0.113.8")
    lawyer.login(consultant)
    other.login(coordinator)
    question_id = _question(db)
    response = lawyer.post(f"/questions/{question_id}/claim",
                           {"csrf_token": other.token("/queue")})
    assert response.status_code == 400
    with db() as session:
        assert session.get(Question, question_id).status == "waiting"  # type: ignore[union-attr]


# -- 2. the media-host allow-list, redirects included ----------------------------------------

class Host:
    """A tiny HTTP host on 127.0.0.1: answers each path as told, remembers who asked."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.requests: list[tuple[str, str | None]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                host.requests.append((self.path, self.headers.get("Authorization")))
                status, headers, body = host.routes.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.routes[path] = (status, {"Location": location}, b"")

    def serve(self, path: str, body: bytes) -> None:
        self.routes[path] = (200, {"Content-Type": "audio/x-wav"}, body)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def origin() -> Iterator[Host]:
    """Stands for api.twilio.com: the recording URL Twilio gives."""
    host = Host()
    yield host
    host.close()


@pytest.fixture
def cdn() -> Iterator[Host]:
    """Stands for the storage host Twilio's media URLs redirect to."""
    host = Host()
    yield host
    host.close()


CDN_PATH = "/rec.wav?X-Amz-Signature=presigned-secret"


def record_from(app: Flask, url: str) -> Recording:
    """Twilio announces a recording at url; the download job runs inline; return its row."""
    sid = new_sid("RE")
    twiml(Twilio(app).post("/voice/recorded?lang=ru", call_form(
        RecordingSid=sid, RecordingUrl=url, RecordingDuration="9")))
    with unit_of_work(runtime(app).sessions) as session:
        return session.scalars(select(Recording).where(Recording.recording_sid == sid)).one()


def test_a_redirect_to_an_allowed_host_is_followed_without_the_credentials(
        make_app: Callable[[Settings], Flask], settings: Settings, origin: Host, cdn: Host,
        question_wav: Path) -> None:
    app = make_app(settings.override(twilio_media_hosts=(origin.host, cdn.host)))
    origin.redirect("/rec", cdn.url(CDN_PATH))
    cdn.serve(CDN_PATH, question_wav.read_bytes())
    recording = record_from(app, origin.url("/rec"))
    assert recording.download_state == "stored"
    assert recording.file_path is not None
    stored = runtime(app).settings.audio_dir / recording.file_path
    assert stored.read_bytes() == question_wav.read_bytes()
    assert origin.requests == [("/rec", BASIC)]  # the account's login, to the original host
    assert cdn.requests == [(CDN_PATH, None)]  # never to the host it redirects to


def test_a_redirect_on_the_same_host_keeps_the_credentials(
        make_app: Callable[[Settings], Flask], settings: Settings, origin: Host,
        question_wav: Path) -> None:
    app = make_app(settings.override(twilio_media_hosts=(origin.host,)))
    origin.redirect("/rec", "/rec.wav", status=307)  # relative Location
    origin.serve("/rec.wav", question_wav.read_bytes())
    assert record_from(app, origin.url("/rec")).download_state == "stored"
    assert origin.requests == [("/rec", BASIC), ("/rec.wav", BASIC)]


def test_a_redirect_to_a_host_not_on_the_list_is_refused_until_an_operator_adds_it(
        make_app: Callable[[Settings], Flask], settings: Settings, origin: Host, cdn: Host,
        question_wav: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(settings.override(twilio_media_hosts=(origin.host,)))
    origin.redirect("/rec", cdn.url(CDN_PATH))
    cdn.serve(CDN_PATH, question_wav.read_bytes())
    recording = record_from(app, origin.url("/rec"))
    assert cdn.requests == []  # never fetched: no SSRF through the media host's redirect
    assert len(origin.requests) == 1  # and not retried
    assert recording.download_state == "refused"
    error = recording.last_error or ""
    assert f"redirected to '{cdn.host}'" in error and "TWILIO_MEDIA_HOSTS" in error
    assert "presigned-secret" not in error  # the host only, never a signed URL's query
    assert not any("presigned-secret" in r.getMessage() for r in caplog.records)
    with unit_of_work(runtime(app).sessions) as session:
        question = session.get(Question, recording.question_id)
        assert question is not None and question.status == "waiting"  # the question is kept
    # The operator adds the storage host (SECURITY.md, README) and fetches it again.
    fixed = make_app(settings.override(twilio_media_hosts=(origin.host, cdn.host)))
    result = run_cli(fixed, ["recordings", "retry"])
    assert result.exit_code == 0, result.output
    with unit_of_work(runtime(fixed).sessions) as session:
        again = session.get(Recording, recording.id)
        assert again is not None and again.download_state == "stored"
    assert cdn.requests == [(CDN_PATH, None)]


@pytest.mark.parametrize("location", [
    "http://169.254.169.254/latest/meta-data/",  # a cloud metadata service
    "http://api.twilio.com/rec.wav",  # an allowed name, but not over https
    "https://api.twilio.com.evil.example/rec.wav",
    "https://user:pw@api.twilio.com/rec.wav",
    "file:///etc/passwd",
])
def test_redirects_are_checked_like_the_first_url(
        make_app: Callable[[Settings], Flask], settings: Settings, origin: Host,
        location: str) -> None:
    app = make_app(settings.override(twilio_media_hosts=(origin.host, "api.twilio.com")))
    origin.redirect("/rec", location, status=301)
    recording = record_from(app, origin.url("/rec"))
    assert recording.download_state == "refused"
    assert "redirected to" in (recording.last_error or "")
    assert "pw" not in (recording.last_error or "")


def test_an_unreachable_storage_host_is_reported_without_the_signed_url(
        make_app: Callable[[Settings], Flask], settings: Settings, origin: Host,
        caplog: pytest.LogCaptureFixture) -> None:
    gone = Host()
    gone.close()  # its port now refuses connections
    app = make_app(settings.override(twilio_media_hosts=(origin.host, gone.host)))
    origin.redirect("/rec", gone.url(CDN_PATH))
    recording = record_from(app, origin.url("/rec"))
    assert recording.download_state == "failed"
    assert "ConnectionError" in (recording.last_error or "")
    assert "presigned-secret" not in (recording.last_error or "")
    assert not any("presigned-secret" in r.getMessage() for r in caplog.records)


def test_a_redirect_loop_is_given_up(make_app: Callable[[Settings], Flask], settings: Settings,
                                     origin: Host) -> None:
    app = make_app(settings.override(twilio_media_hosts=(origin.host,)))
    origin.redirect("/a", "/b")
    origin.redirect("/b", "/a")
    recording = record_from(app, origin.url("/a"))
    assert recording.download_state == "failed"
    assert "more than 3 redirects" in (recording.last_error or "")
    assert len(origin.requests) == 4  # the first request and three redirects, no more


# -- 3. files stay inside their folders ------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/voice/prompts/kk/..%2F..%2Fsecret.wav", "/voice/prompts/kk/../../secret.wav",
    "/voice/prompts/kk/%2E%2E%2Fsecret.wav", "/voice/prompts/..%2Fsecret.wav/x.wav",
    "/voice/prompts/kk/secret_key", "/voice/prompts/xx/x.wav",
])
def test_prompt_audio_never_leaves_the_prompts_folder(app: Flask, path: str) -> None:
    data_dir = runtime(app).settings.data_dir
    (data_dir / "prompts" / "kk").mkdir(parents=True, exist_ok=True)
    (data_dir / "secret.wav").write_bytes(b"SECRET")
    (data_dir / "prompts" / "kk" / "secret_key").write_bytes(b"SECRET")
    response = app.test_client().get(path)
    assert response.status_code == 404, response.status_code
    assert b"SECRET" not in response.get_data()


def test_a_prompt_is_served(app: Flask) -> None:
    folder = runtime(app).settings.data_dir / "prompts" / "kk"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "greeting.wav").write_bytes(b"RIFF....WAVE")
    response = app.test_client().get("/voice/prompts/kk/greeting.wav")
    assert response.get_data() == b"RIFF....WAVE"
    response.close()


def test_retention_never_deletes_through_a_link_out_of_the_audio_folder(
        app: Flask, db: Db, settings: Settings) -> None:
    outside = settings.data_dir / "keep.wav"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(b"keep me")
    link = settings.audio_dir / "recordings" / "2024" / "01" / "link.wav"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    with db() as session:
        caller = touch_caller(session, "+77019999999", datetime(2024, 1, 1, tzinfo=UTC))
        question = Question(caller_id=caller.id, channel=CHANNEL_VOICE, language="ru",
                            status="closed", close_reason="resolved",
                            created_at=datetime(2024, 1, 1, tzinfo=UTC),
                            closed_at=datetime(2024, 1, 2, tzinfo=UTC))
        question.recording = Recording(recording_sid="RE" + "1" * 32, call_sid="CA" + "1" * 32,
                                       source_url="https://api.twilio.com/x",
                                       file_path="recordings/2024/01/link.wav",
                                       download_state="stored")
        session.add(question)
    result = run_cli(app, ["retention"])
    assert "path outside the audio folder" in result.output
    assert outside.read_bytes() == b"keep me"


# -- 4. who can see what ---------------------------------------------------------------------

# Every workspace GET page: what a consultant and a coordinator get (logged out: the login,
# tests/integration/test_auth.py::test_a_logged_out_visitor_is_sent_to_login_and_back).
PAGES = {
    "/": (302, 302),
    "/queue": (200, 200),
    "/account": (200, 200),  # each their own (no id in the path: nobody opens another's)
    "/questions/{id}": (200, 200),
    "/questions/{id}/callback-panel": (200, 200),
    "/questions/{id}/audio": (200, 200),
    "/admin/users": (403, 200),
    "/admin/users/{user}": (403, 200),
    "/admin/audit": (403, 200),
    "/reports": (403, 200),
}


@pytest.fixture
def coordinator_of() -> Callable[[Flask], Browser]:
    """A logged-in coordinator on an app."""

    def login(app: Flask) -> Browser:
        add_user(app, "boss@example.kz", role="coordinator", name="Dana Coordinator")
        browser = Browser(app)
        assert browser.login("boss@example.kz").status_code == 302
        return browser

    return login


def _question(db: Db, audio_dir: Path | None = None) -> int:
    now = datetime.now(UTC)
    with db() as session:
        caller = touch_caller(session, CALLER, now)
        question = Question(caller_id=caller.id, channel=CHANNEL_VOICE, language="ru",
                            topic="pension", created_at=now, transcription_state="done")
        if audio_dir is not None:
            (audio_dir / "recordings").mkdir(parents=True, exist_ok=True)
            (audio_dir / "recordings" / "q.wav").write_bytes(b"RIFF....WAVEfmt ")
            question.recording = Recording(recording_sid=new_sid("RE"), call_sid=new_sid("CA"),
                                           source_url="https://api.twilio.com/x",
                                           file_path="recordings/q.wav",
                                           download_state="stored")
        session.add(question)
        session.flush()
        return question.id


def test_what_each_role_may_open(app: Flask, db: Db, settings: Settings, consultant: str,
                                 coordinator: str) -> None:
    question_id = _question(db, settings.audio_dir)
    workspace = {r.rule.replace("<int:question_id>", "{id}").replace("<int:user_id>", "{user}")
                 for r in app.url_map.iter_rules()
                 if r.endpoint.startswith("workspace.") and "GET" in (r.methods or ())}
    assert workspace == set(PAGES), "a new workspace page: say here who may open it"
    with db() as session:
        user_id = session.scalars(select(User.id).where(User.email == consultant)).one()
    for index, email in enumerate((consultant, coordinator)):
        browser = Browser(app)
        browser.login(email)
        for path, expected in PAGES.items():
            response = browser.get(path.format(id=question_id, user=user_id))
            response.close()
            assert response.status_code == expected[index], (email, path)


def test_no_one_acts_on_a_question_someone_else_holds(app: Flask, db: Db, settings: Settings,
                                                      consultant: str,
                                                      coordinator: str) -> None:
    """Every change to a question needs its claim: neither another consultant nor a
    coordinator can change, call about, answer or close a question held by someone else."""
    question_id = _question(db, settings.audio_dir)
    holder = Browser(app)
    holder.login(consultant)
    assert holder.post(f"/questions/{question_id}/claim",
                       {"csrf_token": holder.token("/queue")}).status_code in (302, 303)
    users_cli(app, ["add", "other@example.kz", "--role", "consultant", "--name", "Other",
                    "--phone", "+77071234567"], input=f"{PASSWORD}\n{PASSWORD}\n")
    forms = {"release": {}, "transcript": {"corrected_text": "x"}, "notes": {"body": "x"},
             "tags": {"region": "akmola"}, "close": {"reason": "silence"}, "call": {},
             "outcome": {"outcome": "resolved"}, "sms": {"body": "Сәлем"}}
    actions = {r.rule.rsplit("/", 1)[-1] for r in app.url_map.iter_rules()
               if r.rule.startswith("/questions/<int:question_id>/")
               and "POST" in (r.methods or ())}
    assert actions - {"claim"} == set(forms), "a new question form: add it here"
    with db() as session:
        before = row_counts(session)
    for email in ("other@example.kz", coordinator):
        intruder = Browser(app, ip="203.0.113.9")
        intruder.login(email)
        token = intruder.token("/queue")
        # Claiming a question that is held (and fresh) is refused too.
        assert intruder.post(f"/questions/{question_id}/claim",
                             {"csrf_token": token}).status_code == 409
        for action, data in forms.items():
            response = intruder.post(f"/questions/{question_id}/{action}",
                                     {"csrf_token": token, **data})
            assert response.status_code == 409, (email, action)
    with db() as session:
        after = row_counts(session)
        # Only the intruders' logins (and the new account) were written.
        changed = {t for t in after if after[t] != before[t]}
        assert changed <= {"login_attempts", "users"}, changed
        found = session.get(Question, question_id)
        assert found is not None and found.status == "claimed"


XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_what_the_public_and_consultants_write_is_shown_escaped(app: Flask, db: Db,
                                                               consultant: str) -> None:
    """Anyone can text the hotline: an SMS question's text, a note and a village name are
    shown as text in the queue and on the question page, never as markup."""
    twilio = Twilio(app)
    sms = {"MessageSid": new_sid("SM"), "AccountSid": ACCOUNT_SID, "From": CALLER,
           "To": "+77000000000", "Body": "вопрос юристу " + XSS}
    assert twilio.post("/sms/incoming", sms).status_code == 200
    with db() as session:
        question_id = session.scalars(select(Question.id)).one()
    lawyer = Browser(app)
    lawyer.login(consultant)
    token = lawyer.token("/queue")
    lawyer.post(f"/questions/{question_id}/claim", {"csrf_token": token})
    lawyer.post(f"/questions/{question_id}/notes", {"csrf_token": token, "body": XSS})
    lawyer.post(f"/questions/{question_id}/tags", {"csrf_token": token, "village": XSS[:60]})
    for path in ("/queue?status=claimed", "/queue", f"/questions/{question_id}"):
        html = lawyer.get(path).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html, path
    assert "&lt;script&gt;" in lawyer.get(f"/questions/{question_id}").get_data(as_text=True)


def test_every_html_page_forbids_code_and_styles_written_into_it(app: Flask, db: Db,
                                                                 consultant: str) -> None:
    """Escaping is the first defence; the Content-Security-Policy the second: markup that got
    through would run nothing (no inline script, style or code in attributes; scripts from
    this site only). Twilio's TwiML and the JSON need none. The pages keeping to it:
    tests/browser (a refusal fails the test)."""
    lawyer = Browser(app)
    lawyer.login(consultant)
    for response in (Browser(app).get("/login"), lawyer.get("/queue"), lawyer.get("/account"),
                     lawyer.get("/questions/999"), Browser(app).get("/public/ru")):
        policy = dict(part.strip().split(" ", 1) for part in
                      response.headers["Content-Security-Policy"].split(";"))
        assert policy["script-src"] == policy["style-src"] == "'self'", response.request.path
        assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    twiml = Twilio(app).post("/voice/incoming", {
        "CallSid": new_sid("CA"), "AccountSid": ACCOUNT_SID, "From": CALLER, "To": "+77000000000"})
    assert twiml.status_code == 200 and twiml.content_type.startswith("application/xml")
    assert "Content-Security-Policy" not in twiml.headers
    assert "Content-Security-Policy" not in Browser(app).get("/public/stats.json").headers


def test_deactivating_an_account_ends_its_open_sessions(app: Flask, db: Db,
                                                      consultant: str) -> None:
    browser = Browser(app)
    browser.login(consultant)
    assert browser.get("/queue").status_code == 200
    with db() as session:
        session.scalars(select(User).where(User.email == consultant)).one().active = False
    response = browser.get("/queue")
    assert response.status_code == 302 and response.headers["Location"] == "/login"


# -- 5. request bodies -----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/voice/incoming", "/sms/incoming", "/login",
                                  "/callbacks/1/answer"])
def test_bodies_over_the_limit_are_refused_before_any_work(app: Flask, db: Db,
                                                           path: str) -> None:
    big = {"Body": "x" * 70_000, "From": CALLER}
    response = Twilio(app).post(path, big)  # even correctly signed
    assert response.status_code == 413
    with db() as session:
        assert set(row_counts(session).values()) == {0}


# -- 6. demo mode ----------------------------------------------------------------------------

def test_outside_demo_mode_nothing_of_the_demo_is_on() -> None:
    """Without HOTLINE_DEMO: no development token, no loopback media host, and the app
    refuses to start without a real token (the phone and the cookie: test_phone_demo.py and
    test_auth.py::test_demo_mode_cookie_works_on_plain_http)."""
    production = Settings.from_env({"HOTLINE_DATA_DIR": "/nonexistent"})
    assert production.twilio_auth_token == "" and production.twilio_media_hosts == (
        "api.twilio.com",)
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        production.check()
    demo = Settings.from_env({"HOTLINE_DATA_DIR": "/nonexistent", "HOTLINE_DEMO": "1"})
    assert set(demo.twilio_media_hosts) == {"api.twilio.com", "127.0.0.1", "localhost"}


def test_demo_mode_says_so_at_start_up(make_app: Callable[[Settings], Flask],
                                       settings: Settings,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hotline.app")
    make_app(settings)
    assert not any("DEMO MODE" in r.getMessage() for r in caplog.records)
    make_app(settings.override(demo=True))
    assert any("DEMO MODE" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


# -- 7. no secrets and no full phone numbers in the logs -------------------------------------

CONSULTANT_PHONE = "+77051234567"


def test_no_secret_and_no_full_number_in_any_log_record_or_the_audit_log(
        make_app: Callable[[Settings], Flask], settings: Settings, api: TwilioApi,
        media: MediaServer, question_wav: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A whole day in one test, logged at DEBUG with SQLAlchemy's statement echo on: a call
    that records a question, an SMS question, failed and good logins, a callback bridged
    through Twilio's API and webhooks, an SMS answer and its status, and a database error."""
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy.engine", "sqlalchemy.pool", "twilio", "urllib3", "hotline",
                 "storage", "huey", "werkzeug"):
        caplog.set_level(logging.DEBUG, logger=name)
    app = make_app(settings.override(twilio_api_url=api.url, public_base_url=BASE_URL))
    secret_key = str(app.config["SECRET_KEY"])
    def db() -> AbstractContextManager[Session]:
        return unit_of_work(runtime(app).sessions)

    twilio = Twilio(app)

    # A resident calls and records a question, then texts one.
    phone = PhoneSimulator(FlaskTransport(app), BASE_URL, account_sid=ACCOUNT_SID,
                           auth_token=AUTH_TOKEN, caller=CALLER, media=media,
                           flow=runtime(app).flow)
    phone.call([*TO_LAWYER, Speak(question_wav)])
    sms = {"MessageSid": new_sid("SM"), "AccountSid": ACCOUNT_SID, "From": "8 701 123 45 67",
           "To": "+77000000000", "Body": "Сосед занял мою землю, что делать?"}
    assert twilio.post("/sms/incoming", sms).status_code == 200

    # A consultant with a phone logs in (after a wrong password), takes the call's question.
    users_cli(app, ["add", "lawyer@example.kz", "--role", "consultant", "--name", "Aigerim",
                    "--phone", CONSULTANT_PHONE], input=f"{PASSWORD}\n{PASSWORD}\n")
    lawyer = Browser(app)
    lawyer.login("lawyer@example.kz", "wrong " + PASSWORD)
    assert lawyer.login("lawyer@example.kz").status_code == 302
    with db() as session:
        question_id = session.scalars(select(Question.id).where(
            Question.channel == CHANNEL_VOICE)).one()
    token = lawyer.token("/queue")
    assert lawyer.post(f"/questions/{question_id}/claim",
                       {"csrf_token": token}).status_code == 303
    assert lawyer.get(f"/questions/{question_id}").status_code == 200

    # The callback: Twilio's API rings the consultant, the webhooks bridge the resident.
    assert lawyer.post(f"/questions/{question_id}/call", {"csrf_token": token}
                       ).status_code == 303
    [call] = api.calls()
    attempt = call.form["Url"].rsplit("/", 2)[-2]
    leg = {"CallSid": _sid_of(app, attempt), "AccountSid": ACCOUNT_SID, "From": "+77000000000",
           "To": CONSULTANT_PHONE, "CallStatus": "in-progress", "AnsweredBy": "human"}
    answer = twilio.post(f"/callbacks/{attempt}/answer", leg)
    assert CALLER in answer.get_data(as_text=True)  # Twilio is told whom to dial: not a log
    resident = {"CallSid": new_sid("CA"), "ParentCallSid": leg["CallSid"],
                "AccountSid": ACCOUNT_SID, "From": "+77000000000", "To": CALLER}
    for status in ("ringing", "in-progress", "completed"):
        twilio.post(f"/callbacks/{attempt}/status/resident", {**resident, "CallStatus": status})
    twilio.post(f"/callbacks/{attempt}/dialed", {**leg, "DialCallStatus": "completed",
                                                 "DialCallSid": resident["CallSid"],
                                                 "DialCallDuration": "60"})
    twilio.post(f"/callbacks/{attempt}/status/consultant", {**leg, "CallStatus": "completed"})

    # An SMS answer goes out through the API; Twilio reports it delivered.
    assert lawyer.post(f"/questions/{question_id}/sms",
                       {"csrf_token": token, "body": "Приходите в ЦОН с паспортом."}
                       ).status_code == 303
    with db() as session:
        out = session.scalars(select(SmsMessage).where(SmsMessage.sent_by_id.is_not(None))).one()
        assert out.message_sid is not None
    twilio.post("/sms/status", {"MessageSid": out.message_sid, "MessageStatus": "delivered",
                                "AccountSid": ACCOUNT_SID, "To": CALLER})
    assert lawyer.post(f"/questions/{question_id}/outcome",
                       {"csrf_token": token, "outcome": "resolved"}).status_code == 303
    lawyer.logout()

    # A database error carrying a number: the statement's parameters are hidden.
    with pytest.raises(IntegrityError) as raised, db() as session:
        session.add(Caller(phone=CALLER, first_seen=datetime.now(UTC),
                           last_seen=datetime.now(UTC)))
        session.flush()
    logging.getLogger("hotline.test").exception("database error", exc_info=raised.value)

    formatter = logging.Formatter("%(name)s %(message)s")
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    assert "INSERT INTO callers" in logged  # the statement echo was on, at DEBUG (columns)
    assert "Col (" in logged
    assert "twilio.http_client" in logged and "Calls.json" in logged  # the REST client's log
    digits = CALLER.removeprefix("+")
    forbidden = {"auth token": AUTH_TOKEN, "basic auth": BASIC.split()[1],
                 "SECRET_KEY": secret_key, "password": PASSWORD,
                 "caller": digits, "caller (national)": digits[1:],
                 "consultant's phone": CONSULTANT_PHONE.removeprefix("+")}
    for what, value in forbidden.items():
        assert value not in logged, f"{what} in the logs"
    # Nor in the audit log's details (the action, ids, counts, never a number).
    with db() as session:
        details = [str(event.detail) for event in session.scalars(select(AuditEvent))]
    assert len(details) >= 5
    for detail in details:
        assert digits not in detail and CONSULTANT_PHONE.removeprefix("+") not in detail


def _sid_of(app: Flask, attempt_id: str) -> str:
    with unit_of_work(runtime(app).sessions) as session:
        found = session.get(CallbackAttempt, int(attempt_id))
        assert found is not None and found.consultant_call_sid is not None
        return found.consultant_call_sid
