"""A caller simulator that plays Twilio's part: signs webhooks, follows TwiML, serves recordings.

`hotline call` drives it from the terminal; the tests walk scripted calls with the same code.
"""

from __future__ import annotations

import base64
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

import requests
from twilio.request_validator import RequestValidator

from flows.engine import Flow
from hotline.recordings import MAX_RECORDING_BYTES
from speech.audio import load_pcm
from speech.errors import AudioError
from speech.wav import is_wav, read_header

HANGUP = "hangup"
SILENCE = ""
CallbackOrder = Literal["action-first", "status-first", "status-twice"]


@dataclass(frozen=True)
class Speak:
    """Record a question: the WAV file the caller 'says', ended with # or by hanging up."""

    path: Path
    end: Literal["#", "hangup"] = "#"
    # The length Twilio reports (RecordingDuration), when known already (check_recording's);
    # read from the WAV header otherwise.
    seconds: float | None = None


Input = str | Speak
Keypad = Callable[[str], Input]


@dataclass
class Heard:
    """One thing the caller heard: spoken text, a played file, or a pause."""

    kind: Literal["say", "play", "pause"]
    language: str | None
    text: str
    url: str | None = None


@dataclass
class CallLog:
    """What happened on one simulated call."""

    call_sid: str
    heard: list[Heard] = field(default_factory=list)
    pressed: list[str] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)
    statuses: list[tuple[str, int]] = field(default_factory=list)
    hung_up_by: Literal["hotline", "caller", ""] = ""

    def texts(self) -> list[str]:
        """Everything heard, as text."""
        return [h.text for h in self.heard]


class Transport(Protocol):
    """Posts a form to a hotline URL and returns (status, body)."""

    def post(self, url: str, data: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        """Post data to url."""
        ...


class FlaskTransport:
    """Posts to an in-process Flask app through its test client."""

    def __init__(self, app: object) -> None:
        self.client = app.test_client()  # type: ignore[attr-defined]

    def post(self, url: str, data: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        """Post data to url on the in-process app."""
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        response = self.client.post(path, base_url=f"{parts.scheme}://{parts.netloc}",
                                    data=data, headers=headers)
        return response.status_code, response.get_data(as_text=True)


class HttpTransport:
    """Posts to a hotline running elsewhere, over HTTP."""

    def post(self, url: str, data: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        """Post data to url over the network."""
        response = requests.post(url, data=data, headers=headers, timeout=20)
        return response.status_code, response.text


def new_sid(prefix: str) -> str:
    """Return a SID shaped like Twilio's (two letters and 32 hex digits)."""
    return prefix + uuid.uuid4().hex


# The rate the check decodes at: a telephone recording's, so that one passes through untouched.
CHECK_RATE = 8000


def wav_seconds(path: Path) -> int:
    """Return a WAV file's duration in whole seconds (at least 1), from its header.

    Any WAV the transcriber reads (8-32-bit integer, float, multi-channel; the stdlib `wave`
    reads only 8/16-bit PCM); raises speech's AudioError for a file that is no such WAV.
    """
    with path.open("rb") as stream:
        fmt = read_header(stream, path.name, path.stat().st_size)
    return max(1, round(fmt.seconds))


def check_recording(path: Path) -> float:
    """Return the length in seconds of a file a caller can 'say', or raise SpeechError.

    Decision: accept what the hotline accepts from Twilio end to end, and nothing else. The
    hotline's download (hotline.recordings) keeps only a WAV file of at most
    MAX_RECORDING_BYTES, as Twilio always sends WAV; its transcriber then reads it with
    speech.audio.load_pcm, which takes any PCM WAV (8-32-bit, float, any rate and channels,
    an encoded one such as mu-law through ffmpeg) and refuses an empty, damaged or overlong one.
    So a WAV is decoded here by that same function (its error is the transcriber's, worded for
    people), and an MP3 or any other non-WAV file is refused: sent as a recording, it would be
    a download that always fails. Converting it here would test a file Twilio never sends.
    """
    with path.open("rb") as stream:
        head = stream.read(16)
    if not is_wav(head):
        raise AudioError(
            f"{path.name} is not a WAV file: the hotline takes only WAV recordings, as Twilio "
            "sends them (convert an MP3 or other audio to WAV first)"
        )
    size = path.stat().st_size
    if size > MAX_RECORDING_BYTES:
        raise AudioError(
            f"{path.name} is {size // (1024 * 1024)} MB; the hotline downloads recordings of "
            f"at most {MAX_RECORDING_BYTES // (1024 * 1024)} MB"
        )
    _pcm, seconds = load_pcm(path, CHECK_RATE)
    return seconds


class MediaServer:
    """A local stand-in for Twilio's media host: serves recordings behind the account's login."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self._expected = "Basic " + base64.b64encode(
            f"{account_sid}:{auth_token}".encode()).decode()
        self._files: dict[str, Path] = {}
        self._failures: list[int] = []
        self.requests: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        # A short poll: shutting down waits for it (the default 0.5 s, in every test that used one).
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def host(self) -> str:
        """host:port of the server, for TWILIO_MEDIA_HOSTS."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> MediaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, *statuses: int) -> None:
        """Answer the next requests with these HTTP statuses (a host that is not ready yet)."""
        with self._lock:
            self._failures.extend(statuses)

    def add(self, recording_sid: str, path: Path) -> str:
        """Serve path as recording_sid; return its URL."""
        with self._lock:
            self._files[recording_sid] = path
        return (f"http://{self.host}/2010-04-01/Accounts/{self.account_sid}"
                f"/Recordings/{recording_sid}")

    def hits(self, recording_sid: str) -> int:
        """How many requests asked for recording_sid."""
        return sum(1 for path, _ in self.requests if path.endswith(recording_sid))

    def wait_served(self, recording_sid: str, timeout: float) -> bool:
        """Wait until recording_sid has been downloaded once; return whether it was."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if any(p.endswith(recording_sid) and s == 200 for p, s in self.requests):
                    return True
            time.sleep(0.2)
        return False

    def _answer(self, path: str, authorization: str) -> tuple[int, bytes]:
        sid = path.rsplit("/", 1)[-1].removesuffix(".wav")
        with self._lock:
            if authorization != self._expected:
                status, body = 401, b"unauthorised"
            elif sid not in self._files:
                status, body = 404, b"not found"
            elif self._failures:
                status, body = self._failures.pop(0), b"not yet"
            else:
                status, body = 200, self._files[sid].read_bytes()
            self.requests.append((path, status))
        return status, body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        media = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                status, body = media._answer(self.path, self.headers.get("Authorization", ""))
                self.send_response(status)
                self.send_header("Content-Type", "audio/x-wav" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        return Handler


def scripted(inputs: Iterable[Input]) -> Keypad:
    """Return a keypad that answers from a list and hangs up when the list runs out."""
    queue: Iterator[Input] = iter(inputs)
    return lambda _kind: next(queue, HANGUP)


_PROMPT_PATH = re.compile(
    r"/voice/prompts/(?P<lang>[a-z]{2})/(?P<key>[^/]+?)(-[0-9a-f]{10})?\.wav$"
)


class PhoneSimulator:
    """Plays a phone and Twilio's voice platform against the hotline's webhooks."""

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        *,
        account_sid: str,
        auth_token: str,
        caller: str = "+77011234567",
        hotline_number: str = "+77000000000",
        media: MediaServer | None = None,
        flow: Flow | None = None,
        echo: Callable[[str], None] | None = None,
        callback_order: CallbackOrder = "action-first",
    ) -> None:
        self.transport = transport
        self.base_url = base_url.rstrip("/")
        self.account_sid = account_sid
        self.validator = RequestValidator(auth_token)
        self.caller = caller
        self.hotline_number = hotline_number
        self.media = media
        self.flow = flow
        self.echo = echo or (lambda _line: None)
        self.callback_order = callback_order

    def post(self, url: str, data: dict[str, str], call_sid: str) -> tuple[int, str]:
        """Post a webhook signed the way Twilio signs it."""
        form = {"AccountSid": self.account_sid, "CallSid": call_sid, "From": self.caller,
                "To": self.hotline_number, "ApiVersion": "2010-04-01",
                "Direction": "inbound", **data}
        signature = self.validator.compute_signature(url, form)
        return self.transport.post(url, form, {"X-Twilio-Signature": signature})

    def call(self, keypad: Keypad | Iterable[Input]) -> CallLog:
        """Make one call, answering the hotline's menus with keypad; return what happened."""
        keys = keypad if callable(keypad) else scripted(keypad)
        log = CallLog(call_sid=new_sid("CA"))
        url: str | None = f"{self.base_url}/voice/incoming"
        data: dict[str, str] = {}
        while url:
            status, body = self.post(url, data, log.call_sid)
            log.statuses.append((url, status))
            if status != 200:
                self.echo(f"!! the hotline answered HTTP {status} to {url}")
                break
            url, data = self._follow(ET.fromstring(body), keys, log)
        self.post(f"{self.base_url}/voice/status",
                  {"CallStatus": "completed", "CallDuration": "60"}, log.call_sid)
        return log

    def _follow(
        self, root: ET.Element, keys: Keypad, log: CallLog
    ) -> tuple[str | None, dict[str, str]]:
        """Act out one TwiML document; return the next request to make, if any."""
        for verb in root:
            if verb.tag in ("Say", "Play", "Pause"):
                self._hear(verb, log)
            elif verb.tag == "Gather":
                for child in verb:
                    self._hear(child, log)
                key = keys("key")
                if key == HANGUP or not isinstance(key, str):
                    return self._caller_hangs_up(log)
                log.pressed.append(key)
                self.echo(f"   [pressed {key}]" if key else "   [silence]")
                if key or verb.get("actionOnEmptyResult") == "true":
                    return verb.get("action"), ({"Digits": key} if key else {})
            elif verb.tag == "Record":
                spoken = keys("record")
                if spoken == HANGUP:
                    return self._caller_hangs_up(log)
                if isinstance(spoken, Speak):
                    return self._record(verb, spoken, keys, log)
                self.echo("   [says nothing after the beep]")
            elif verb.tag == "Redirect":
                return (verb.text or "").strip(), {}
            elif verb.tag == "Hangup":
                self.echo("   [the hotline hangs up]")
                log.hung_up_by = "hotline"
                return None, {}
        return None, {}

    def _caller_hangs_up(self, log: CallLog) -> tuple[None, dict[str, str]]:
        self.echo("   [caller hangs up]")
        log.hung_up_by = "caller"
        return None, {}

    def _record(
        self, verb: ET.Element, spoken: Speak, keys: Keypad, log: CallLog
    ) -> tuple[str | None, dict[str, str]]:
        if self.media is None:
            raise RuntimeError("recording a question needs a MediaServer")
        recording_sid = new_sid("RE")
        log.recordings.append(recording_sid)
        seconds = (wav_seconds(spoken.path) if spoken.seconds is None
                   else max(1, round(spoken.seconds)))
        self.echo(f"   [records {spoken.path.name}, {seconds} s, ends with {spoken.end}]")
        recording = {"RecordingSid": recording_sid,
                     "RecordingUrl": self.media.add(recording_sid, spoken.path),
                     "RecordingDuration": str(seconds)}
        action = {**recording, "Digits": spoken.end}
        status = {**recording, "RecordingStatus": "completed", "RecordingSource": "RecordVerb",
                  "RecordingChannels": "1"}
        action_url = verb.get("action") or ""
        status_url = verb.get("recordingStatusCallback") or ""
        status_posts = 2 if self.callback_order == "status-twice" else 1
        if self.callback_order != "action-first":
            for _ in range(status_posts):
                log.statuses.append((status_url, self.post(status_url, status, log.call_sid)[0]))
        code, body = self.post(action_url, action, log.call_sid)
        log.statuses.append((action_url, code))
        if self.callback_order == "action-first":
            log.statuses.append((status_url, self.post(status_url, status, log.call_sid)[0]))
        if spoken.end == "hangup" or code != 200:
            log.hung_up_by = "caller"
            return None, {}
        return self._follow(ET.fromstring(body), keys, log)

    def _hear(self, element: ET.Element, log: CallLog) -> None:
        if element.tag == "Pause":
            log.heard.append(Heard("pause", None, f"({element.get('length', '1')} s pause)"))
            return
        if element.tag == "Say":
            language = (element.get("language") or "")[:2] or None
            text = " ".join("".join(element.itertext()).split())
            log.heard.append(Heard("say", language, text))
            self.echo(f"SAY  [{language}] {text}")
            return
        url = (element.text or "").strip()
        language, text = self._describe(url)
        log.heard.append(Heard("play", language, text, url))
        self.echo(f"PLAY [{language}] {text}")

    def _describe(self, url: str) -> tuple[str | None, str]:
        match = _PROMPT_PATH.search(urlsplit(url).path)
        if not match:
            return None, url
        language, key = match["lang"], match["key"]
        if self.flow and key in self.flow.content.prompts.get(language, {}):
            return language, self.flow.prompt(language, key).text
        return language, f"<{key}>"

