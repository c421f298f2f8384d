"""The built-in phone (demo mode only): try the hotline from a browser, as Twilio would call it.

`/phone` is a keypad page whose script (static/phone.js) plays the part of Twilio's voice
platform against the real webhooks: it asks this blueprint to sign each request with the
configured auth token (twilio's RequestValidator, as Twilio signs), posts it to /voice/...,
and follows the TwiML. A recorded question is uploaded here as a WAV, served back like Twilio's
media host (behind the account SID and token), and announced with the ordinary Record action and
recording status callback: the download job fetches it and the transcription job transcribes it
as any other recording. Nothing outside this module knows a call came from the page.

The blueprint is registered only in demo mode (`init_app`), so every route here is 404 in
production. Its helper routes are not signed webhooks: the page sends its CSRF token with each
POST; the sign route signs only URLs of this hotline's /voice/ webhooks.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import logging
import re
import time
import uuid
import wave
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, abort, jsonify, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError, generate_csrf, validate_csrf
from sqlalchemy import select
from twilio.request_validator import RequestValidator
from wtforms import ValidationError

from hotline.auth import csrf
from hotline.config import DEMO_AUTH_TOKEN
from hotline.twilio_glue import external_url, runtime
from hotline.workspace import TRANSCRIPTION
from storage.db import unit_of_work
from storage.models import TRANSCRIPTION_NO_MODEL, Recording

log = logging.getLogger(__name__)

bp = Blueprint("phone_demo", __name__, url_prefix="/phone")

# The page converts recordings to 8 kHz mono 16-bit WAV, as Twilio records a call: 120 s of it
# is under 2 MB. Up to 16 kHz and a little over the 120 s of <Record maxLength> are accepted.
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
MAX_RECORDING_SECONDS = 125
SAMPLE_RATES = range(8000, 16001)
# Uploaded recordings are kept a day: the download job copies them into the audio folder.
KEEP_UPLOADS_SECONDS = 24 * 3600
MAX_SIGNED_PARAMS = 40
MAX_SIGNED_CHARS = 16 * 1024

CALL_SID = re.compile(r"^CA[0-9a-f]{32}$")
RECORDING_SID = re.compile(r"^RE[0-9a-f]{32}$")
PROMPT_PATH = re.compile(r"/voice/prompts/(?P<lang>[a-z]{2})/(?P<key>[^/]+?)(-[0-9a-f]{10})?\.wav$")
API_VERSION = "2010-04-01"


def init_app(app: Flask) -> None:
    """Add /phone to the app, in demo mode only (otherwise its routes do not exist: 404)."""
    if app.extensions["hotline"].settings.demo:
        app.register_blueprint(bp)


def uploads_dir() -> Path:
    """Where the page's recordings wait for the download job (outside the audio folder)."""
    return runtime().settings.data_dir / "phone-demo"


@bp.after_request
def no_store(response: Response) -> Response:
    """Signatures and recordings are not for caches; the page is not for frames."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    return response


@bp.get("")
def page() -> ResponseReturnValue:
    """The phone: keypad, Call and Hang up, and what the hotline says."""
    settings = runtime().settings
    texts = {
        "ready": _("Ready. Press “Call the hotline”."),
        "calling": _("Calling the hotline…"),
        "connected": _("Connected. Listen, and press keys when asked."),
        "recording": _("Recording: speak now. Press # when you have finished."),
        "uploading": _("Sending the recording…"),
        "ended": _("The call has ended."),
        "hotlineHungUp": _("The hotline hung up."),
        "youHungUp": _("You hung up."),
        "pressed": _("You pressed"),
        "silence": _("(silence: no key pressed)"),
        "pause": _("(pause)"),
        "noVoice": _("(this browser has no voice for this language: read the text)"),
        "noMicrophone": _("The microphone is not available: nothing was recorded."),
        "nothingRecorded": _("Nothing was heard in the recording."),
        "recorded": _("Recorded"),
        "seconds": _("sec."),
        "error": _("The hotline answered with an error"),
        "question": _("Your question in the consultants' workspace"),
        "transcription": _("transcription"),
        "noQuestion": _("No question was left on this call."),
        "beep": _("(beep)"),
        "expired": _("This page has expired (you logged in or out meanwhile): reload it."),
        "failed": _("Something went wrong; the call was ended."),
        "notSent": _("The recording could not be sent: nothing was stored."),
    }
    config = {
        "incomingUrl": external_url("voice.incoming"),
        "statusUrl": external_url("voice.call_status"),
        "signUrl": url_for("phone_demo.sign"),
        "tokenUrl": url_for("phone_demo.token"),
        "uploadUrl": url_for("phone_demo.upload"),
        "questionsUrl": url_for("phone_demo.call_questions", call_sid="CALLSID"),
        "promptTextUrl": url_for("phone_demo.prompt_text"),
        "accountSid": settings.twilio_account_sid,
        "to": settings.twilio_phone_number or "+77000000000",
        "texts": texts,
    }
    return render_template("phone.html", config=config)


LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _allowed_webhook(url: str) -> bool:
    """Tell whether url is one of this hotline's voice webhooks (the only URLs signed here)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[": not a URL at all
        return False
    if parts.username or parts.password or parts.fragment:
        return False
    if ".." in parts.path or "/." in parts.path or "%" in parts.path or "//" in parts.path:
        return False  # no way out of /voice/ by dot segments or encoded slashes
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    settings = runtime().settings
    bases = {str(settings.public_base_url).lower()} if settings.public_base_url else set()
    # The host the request names is the client's to choose (a Host header). With the public
    # demo token a signature is worth nothing elsewhere, so any host the page is opened on
    # will do (a laptop shown to a funder on the same network). With a real account's token,
    # only this machine's own names: a signature for another host would be a valid request
    # to the hotline that really answers there.
    own = request.host_url.rstrip("/").lower()
    if settings.twilio_auth_token == DEMO_AUTH_TOKEN or urlsplit(own).hostname in LOOPBACK:
        bases.add(own)
    prefix = request.script_root + "/voice/"
    return any(origin + parts.path[: len(prefix)] == base + prefix for base in bases)


@bp.errorhandler(CSRFError)
def csrf_refused(error: CSRFError) -> ResponseReturnValue:
    """A token the session no longer has (a login or logout in another tab): said in a way the
    page recognises, so it fetches the new one (/phone/token) and tries again; any other 400
    (a URL it will not sign, a bad WAV) is not mistaken for it."""
    return jsonify(error="csrf", description=error.description), 400


@bp.get("/token")
def token() -> ResponseReturnValue:
    """The session's CSRF token, for a page opened before a login or logout in another tab
    changed the session (the page's own token no longer matches: its next request is refused)."""
    return jsonify(csrfToken=generate_csrf())


@bp.post("/sign")
def sign() -> ResponseReturnValue:
    """Sign a webhook request for the page, as Twilio signs it: {url, params} -> signature."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="expected JSON {url, params}")
    url, params = body.get("url"), body.get("params", {})
    if not isinstance(url, str) or not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        abort(400, description="url must be a string and params an object of strings")
    if len(params) > MAX_SIGNED_PARAMS or sum(len(k) + len(v) for k, v in params.items()) + len(
            url) > MAX_SIGNED_CHARS:
        abort(400, description="too much to sign")
    if not _allowed_webhook(url):
        abort(400, description="only this hotline's /voice/ webhooks are signed")
    validator = RequestValidator(runtime().settings.twilio_auth_token)
    return jsonify(signature=validator.compute_signature(url, params))


def wav_seconds(data: bytes) -> float:
    """Check that data is a WAV the way the page makes them; return its length in seconds.

    Raises ValueError naming what is wrong.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise ValueError("the recording is too large")
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    try:
        with wave.open(io.BytesIO(data), "rb") as audio:
            channels, width = audio.getnchannels(), audio.getsampwidth()
            rate, frames = audio.getframerate(), audio.getnframes()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a PCM WAV file: {exc}") from exc
    if channels != 1 or width != 2 or rate not in SAMPLE_RATES:
        raise ValueError("expected mono 16-bit PCM at 8 to 16 kHz")
    if frames <= 0:
        raise ValueError("the recording is empty")
    seconds = frames / rate
    if seconds > MAX_RECORDING_SECONDS:
        raise ValueError("the recording is too long")
    return seconds


def _prune_uploads(folder: Path) -> None:
    cutoff = time.time() - KEEP_UPLOADS_SECONDS
    for old in folder.glob("RE*.wav"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            continue


def _media_base() -> str:
    """Base URL the download job can fetch from: this server, on a loopback address.

    Demo mode allows http only from 127.0.0.1 and localhost (TWILIO_MEDIA_HOSTS); a page opened
    on another address still hands over a loopback URL on the port this server listens on.
    """
    host = urlsplit(request.host_url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return request.host_url.rstrip("/")
    return f"http://127.0.0.1:{request.environ.get('SERVER_PORT', '80')}"


@bp.post("/recordings")
@csrf.exempt  # type: ignore[untyped-decorator]  # checked below, after raising the size limit
def upload() -> ResponseReturnValue:
    """Keep a recording made on the page; answer the URL Twilio would give it, and its length."""
    request.max_content_length = MAX_UPLOAD_BYTES
    try:
        validate_csrf(request.headers.get("X-CSRFToken"))
    except ValidationError as exc:
        raise CSRFError(str(exc)) from exc
    if request.mimetype not in ("audio/wav", "audio/x-wav", "audio/wave"):
        abort(415, description="send the recording as audio/wav")
    if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
        abort(413)
    data = request.get_data(cache=False)
    try:
        seconds = wav_seconds(data)
    except ValueError as exc:
        return jsonify(error=str(exc)), 413 if "too" in str(exc) else 400
    folder = uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    _prune_uploads(folder)
    sid = "RE" + uuid.uuid4().hex
    (folder / f"{sid}.wav").write_bytes(data)
    account = runtime().settings.twilio_account_sid
    path = url_for("phone_demo.media", account_sid=account, recording_sid=sid)
    log.info("demo phone: stored recording %s (%.1f s)", sid, seconds)
    return jsonify(sid=sid, url=_media_base() + path, duration=max(1, round(seconds)),
                   seconds=round(seconds, 2))


@bp.get(f"/media/{API_VERSION}/Accounts/<account_sid>/Recordings/<recording_sid>")
def media(account_sid: str, recording_sid: str) -> ResponseReturnValue:
    """Serve a recording as Twilio's media host does: to the account's SID and token only."""
    settings = runtime().settings
    auth = request.authorization
    if (auth is None or auth.type != "basic"
            or not hmac.compare_digest((auth.username or "").encode(),
                                       settings.twilio_account_sid.encode())
            or not hmac.compare_digest((auth.password or "").encode(),
                                       settings.twilio_auth_token.encode())):
        return Response("unauthorised", 401, {"WWW-Authenticate": 'Basic realm="Twilio API"'})
    sid = recording_sid.removesuffix(".wav")
    if account_sid != settings.twilio_account_sid or not RECORDING_SID.fullmatch(sid):
        abort(404)
    path = uploads_dir() / f"{sid}.wav"
    if not path.is_file():
        abort(404)
    return Response(path.read_bytes(), mimetype="audio/x-wav")


@bp.get("/calls/<call_sid>/questions")
def call_questions(call_sid: str) -> ResponseReturnValue:
    """The questions left on a call made from the page, with links into the workspace."""
    if not CALL_SID.fullmatch(call_sid):
        abort(404)
    with unit_of_work(runtime().sessions) as session:
        recordings = session.scalars(
            select(Recording).where(Recording.call_sid == call_sid).order_by(Recording.id)
        ).all()
        found: list[dict[str, Any]] = [
            {"id": r.question_id, "recording": r.recording_sid,
             "url": url_for("workspace.question", question_id=r.question_id),
             "download": r.download_state,
             "transcription": r.question.transcription_state,
             "transcription_label": _transcription_label(r.question.transcription_state),
             "language": r.question.language}
            for r in recordings
        ]
    return jsonify(questions=found)


def _transcription_label(state: str) -> str:
    """Where the transcript stands, in the words of someone trying the hotline (the workspace's
    "no model" says nothing to a funder)."""
    if state == TRANSCRIPTION_NO_MODEL:
        return str(_("no speech model for this language on this machine: the lawyer listens "
                     "to the recording"))
    return str(TRANSCRIPTION.get(state, state))


@bp.get("/prompt-text")
def prompt_text() -> ResponseReturnValue:
    """The text of a prompt's audio file (?url=), or of a <Say> prompt (?say=, with
    ?language=, not ?lang=, which would switch the page's own language: what the voice is
    given, the pronounce table's spoken form), shown while the page plays or speaks it: as
    written, "SMS" and "1414", not "эс-эм-эс"."""
    if "say" in request.args:
        language = request.args.get("language", "")
        said = request.args.get("say", "").strip()
        flow = runtime().flow
        if language not in flow.content.prompts:
            return jsonify(language=None, text=None)
        text = next((prompt.text for prompt in flow.all_prompts(language)
                     if prompt.speech.strip() == said), None)
        return jsonify(language=language, text=text)
    try:
        match = PROMPT_PATH.search(urlsplit(request.args.get("url", "")).path)
    except ValueError:  # "http://[": not a URL at all
        match = None
    if not match:
        return jsonify(language=None, text=None)
    language, key = match["lang"], match["key"]
    content = runtime().flow.content
    if key not in content.prompts.get(language, {}):
        return jsonify(language=language, text=None)
    return jsonify(language=language, text=runtime().flow.prompt(language, key).text)
