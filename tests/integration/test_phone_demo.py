"""The built-in phone's routes (hotline/phone_demo.py): only in demo mode; what they sign and keep.

The page itself, driving a whole call in Chromium, is tests/browser/test_phone.py.
"""

from __future__ import annotations

import base64
import io
import re
import wave
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from hotline.config import DEMO_AUTH_TOKEN, Settings
from storage.calls import start_call
from storage.db import unit_of_work
from storage.models import TRANSCRIPTION_NO_MODEL, Question
from storage.questions import record_question
from tests.support import ACCOUNT_SID, AUTH_TOKEN, CALLER, runtime, twiml

HOST = "http://localhost"
ROUTES = [("GET", "/phone"), ("POST", "/phone/sign"), ("POST", "/phone/recordings"),
          ("GET", f"/phone/media/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/RE{'a' * 32}"),
          ("GET", f"/phone/calls/CA{'a' * 32}/questions"), ("GET", "/phone/prompt-text")]


def wav_bytes(seconds: float, rate: int = 8000, channels: int = 1, width: int = 2) -> bytes:
    """A WAV of a quiet tone."""
    frames = int(seconds * rate)
    tone = (3000 * np.sin(np.arange(frames) * 2 * np.pi * 440 / rate)).astype("<i2")
    samples = np.repeat(tone, channels)
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(samples.tobytes() if width == 2 else (samples // 256).astype(
            "i1").tobytes())
    return out.getvalue()


@pytest.fixture
def demo_app(make_app: Callable[[Settings], Flask], settings: Settings) -> Flask:
    """The hotline in demo mode (the test account's SID and token stand in for the demo ones)."""
    return make_app(settings.override(demo=True))


@pytest.fixture
def page(demo_app: Flask) -> tuple[FlaskClient, str]:
    """A browser on /phone: the test client with the page's session, and its CSRF token."""
    client = demo_app.test_client()
    response = client.get("/phone")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match
    return client, match.group(1)


def sign(page: tuple[FlaskClient, str], url: str, params: dict[str, str]) -> tuple[int, str]:
    client, token = page
    response = client.post("/phone/sign", json={"url": url, "params": params},
                           headers={"X-CSRFToken": token})
    return response.status_code, (response.json or {}).get("signature", "")


def upload(page: tuple[FlaskClient, str], data: bytes, mimetype: str = "audio/wav",
           token: str | None = None) -> tuple[int, dict[str, object]]:
    client, page_token = page
    response = client.post("/phone/recordings", data=data, content_type=mimetype,
                           headers={"X-CSRFToken": page_token if token is None else token})
    return response.status_code, dict(response.json or {})


# -- demo mode only ------------------------------------------------------------------------------

def test_every_phone_route_is_404_without_demo_mode(app: Flask) -> None:
    assert not runtime(app).settings.demo
    client = app.test_client()
    for method, path in ROUTES:
        assert client.open(path, method=method).status_code == 404, path
    assert not [r for r in app.url_map.iter_rules() if r.endpoint.startswith("phone_demo.")]


def test_demo_mode_adds_the_phone_and_nothing_else(demo_app: Flask, app: Flask) -> None:
    demo = {r.rule for r in demo_app.url_map.iter_rules()}
    normal = {r.rule for r in app.url_map.iter_rules()}
    assert demo - normal == {
        "/phone", "/phone/sign", "/phone/token", "/phone/recordings",
        "/phone/calls/<call_sid>/questions", "/phone/prompt-text",
        "/phone/media/2010-04-01/Accounts/<account_sid>/Recordings/<recording_sid>"}


def test_the_page_has_a_keypad_and_knows_the_webhooks(page: tuple[FlaskClient, str]) -> None:
    client, _token = page
    html = client.get("/phone?lang=en").get_data(as_text=True)
    for key in [*"123456789", "*", "0", "#"]:
        assert f'data-key="{key}"' in html
    assert f"{HOST}/voice/incoming" in html and f"{HOST}/voice/status" in html
    assert ACCOUNT_SID in html and AUTH_TOKEN not in html
    russian = client.get("/phone?lang=ru").get_data(as_text=True)
    assert "Позвонить на линию" in russian and "Положить трубку" in russian


# -- signing -------------------------------------------------------------------------------------

def test_the_sign_route_signs_what_the_webhook_accepts(page: tuple[FlaskClient, str]) -> None:
    client, _token = page
    url = f"{HOST}/voice/incoming"
    form = {"AccountSid": ACCOUNT_SID, "CallSid": "CA" + "d" * 32, "From": CALLER,
            "To": "+77000000000", "ApiVersion": "2010-04-01", "Direction": "inbound"}
    status, signature = sign(page, url, form)
    assert status == 200
    assert RequestValidator(AUTH_TOKEN).validate(url, form, signature)
    # The webhook itself takes it, as from Twilio; the test client carries no cookie for it.
    answer = client.post("/voice/incoming", data=form, headers={"X-Twilio-Signature": signature})
    assert twiml(answer).find("Gather") is not None
    # A URL with a query (a Gather action) too.
    action = f"{HOST}/voice/menu?node=language&tries=0"
    status, signature = sign(page, action, {**form, "Digits": "2"})
    assert RequestValidator(AUTH_TOKEN).validate(action, {**form, "Digits": "2"}, signature)
    # A tampered form is refused by the webhook.
    tampered = client.post("/voice/menu?node=language&tries=0", data={**form, "Digits": "1"},
                           headers={"X-Twilio-Signature": signature})
    assert tampered.status_code == 403


@pytest.mark.parametrize(("token", "host", "signed"), [
    (AUTH_TOKEN, "http://hotline.example.kz", False),   # a real token: not another host
    (AUTH_TOKEN, "http://127.0.0.1:5000", True),        # this machine
    (DEMO_AUTH_TOKEN, "http://192.168.1.20:5000", True),  # the public demo token: any host
])
def test_a_host_named_by_the_request_is_signed_for_only_where_harmless(
        make_app: Callable[[Settings], Flask], settings: Settings, token: str, host: str,
        signed: bool) -> None:
    """The Host header is the client's: with a real account's token, a signature for the host
    it names could be replayed against the hotline that really answers there."""
    app = make_app(settings.override(demo=True, twilio_auth_token=token))
    client = app.test_client()
    html = client.get("/phone", base_url=host).get_data(as_text=True)
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match
    response = client.post("/phone/sign", base_url=host, headers={"X-CSRFToken": match.group(1)},
                           json={"url": f"{host}/voice/incoming",
                                 "params": {"CallSid": "CA" + "d" * 32}})
    assert response.status_code == (200 if signed else 400)


@pytest.mark.parametrize("url", [
    "http://evil.example/voice/incoming",        # another host
    f"{HOST}/sms/incoming",                      # not a voice webhook
    f"{HOST}/phone/sign",
    f"{HOST}/voicemail",
    "http://user:pw@localhost/voice/incoming",
    "/voice/incoming",                           # not absolute
    f"{HOST}/voice/../sms/incoming",             # out of /voice/ by dot segments
    f"{HOST}/voice/%2e%2e/sms/incoming",
    f"{HOST}/voice//sms/incoming",
])
def test_the_sign_route_signs_only_this_hotlines_voice_webhooks(
        page: tuple[FlaskClient, str], url: str) -> None:
    status, signature = sign(page, url, {"CallSid": "CA" + "d" * 32})
    assert (status, signature) == (400, "")


def test_the_sign_route_wants_the_pages_token_and_strings(page: tuple[FlaskClient, str]) -> None:
    client, _token = page
    url = f"{HOST}/voice/incoming"
    # A missing or stale token is said so (the page then fetches the session's, /phone/token);
    # other refusals are not taken for it.
    refused = client.post("/phone/sign", json={"url": url, "params": {}})
    assert refused.status_code == 400 and (refused.json or {}).get("error") == "csrf"
    fresh = client.get("/phone/token").json or {}
    again = client.post("/phone/sign", json={"url": url, "params": {}},
                        headers={"X-CSRFToken": fresh["csrfToken"]})
    assert again.status_code == 200 and again.json and again.json["signature"]
    other = client.post("/phone/sign", json={"url": "https://elsewhere.example/x", "params": {}},
                        headers={"X-CSRFToken": fresh["csrfToken"]})
    assert other.status_code == 400 and (other.json or {}).get("error") != "csrf"
    assert sign(page, url, {"Digits": 1})[0] == 400  # type: ignore[dict-item]
    assert sign(page, url, {f"k{i}": "v" for i in range(100)})[0] == 400
    assert client.post("/phone/sign", data="[]", content_type="application/json",
                       headers={"X-CSRFToken": page[1]}).status_code == 400


def test_the_public_base_url_is_signed_as_twilio_sees_it(
        make_app: Callable[[Settings], Flask], settings: Settings) -> None:
    app = make_app(settings.override(demo=True, public_base_url="https://hotline.example"))
    client = app.test_client()
    html = client.get("/phone").get_data(as_text=True)
    assert "https://hotline.example/voice/incoming" in html
    token = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert token
    form = {"CallSid": "CA" + "e" * 32, "From": CALLER}
    answer = client.post("/phone/sign", json={"url": "https://hotline.example/voice/incoming",
                                              "params": form},
                         headers={"X-CSRFToken": token.group(1)})
    assert answer.status_code == 200
    posted = client.post("/voice/incoming", data=form,
                         headers={"X-Twilio-Signature": answer.json["signature"]})  # type: ignore[index]
    assert posted.status_code == 200


# -- uploads and the media host ------------------------------------------------------------------

def test_an_upload_is_kept_and_served_like_twilios_media(page: tuple[FlaskClient, str],
                                                         settings: Settings) -> None:
    client, _token = page
    data = wav_bytes(2.4)
    status, answer = upload(page, data)
    assert status == 200, answer
    sid = str(answer["sid"])
    assert re.fullmatch(r"RE[0-9a-f]{32}", sid)
    assert answer["duration"] == 2 and answer["seconds"] == 2.4
    assert answer["url"] == (f"{HOST}/phone/media/2010-04-01/Accounts/{ACCOUNT_SID}"
                             f"/Recordings/{sid}")
    path = str(answer["url"]).removeprefix(HOST)
    assert client.get(path).status_code == 401
    wrong = base64.b64encode(f"{ACCOUNT_SID}:not-the-token".encode()).decode()
    assert client.get(path, headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    right = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    served = client.get(path, headers={"Authorization": f"Basic {right}"})
    assert served.status_code == 200 and served.data == data
    assert served.mimetype == "audio/x-wav"
    assert client.get(path + ".wav", headers={"Authorization": f"Basic {right}"}).data == data
    other = path.replace(sid, "RE" + "0" * 32)
    assert client.get(other, headers={"Authorization": f"Basic {right}"}).status_code == 404
    # Kept outside the audio folder: the download job puts its own copy there.
    assert (settings.data_dir / "phone-demo" / f"{sid}.wav").read_bytes() == data
    assert not settings.audio_dir.exists() or not list(settings.audio_dir.rglob("*.wav"))


@pytest.mark.parametrize(("data", "mimetype", "status"), [
    (b"hello, this is not audio", "audio/wav", 400),
    (b"RIFF\x00\x00\x00\x00WAVEfmt garbage", "audio/wav", 400),
    (wav_bytes(1.0), "text/plain", 415),
    (wav_bytes(1.0, channels=2), "audio/wav", 400),
    (wav_bytes(1.0, rate=44100), "audio/wav", 400),
    (wav_bytes(1.0, width=1), "audio/wav", 400),
    (wav_bytes(0.0), "audio/wav", 400),
    (wav_bytes(130.0), "audio/wav", 413),                          # longer than <Record> allows
    (wav_bytes(131.0, rate=16000), "audio/wav", 413),             # more than 4 MB
])
def test_the_upload_refuses_what_is_not_a_recording(page: tuple[FlaskClient, str],
                                                    settings: Settings, data: bytes,
                                                    mimetype: str, status: int) -> None:
    assert upload(page, data, mimetype)[0] == status
    folder = settings.data_dir / "phone-demo"
    assert not folder.exists() or not list(folder.iterdir())


def test_the_upload_wants_the_pages_token(page: tuple[FlaskClient, str]) -> None:
    assert upload(page, wav_bytes(1.0), token="")[0] == 400
    assert upload(page, wav_bytes(1.0), token="forged")[0] == 400
    client, _token = page
    forged = client.post("/phone/recordings", data=wav_bytes(1.0), content_type="audio/wav",
                         headers={"X-CSRFToken": "forged"})
    assert (forged.json or {}).get("error") == "csrf"


def test_the_upload_limit_is_raised_for_this_route_only(page: tuple[FlaskClient, str]) -> None:
    client, token = page
    # Twilio's forms are small: the app keeps its 64 KB limit everywhere else.
    big = {"CallSid": "CA" + "f" * 32, "junk": "x" * 100_000}
    assert client.post("/phone/sign", json={"url": f"{HOST}/voice/incoming", "params": big},
                       headers={"X-CSRFToken": token}).status_code == 413
    assert upload(page, wav_bytes(60.0))[0] == 200  # about 1 MB


# -- after the call ------------------------------------------------------------------------------

def test_the_questions_of_a_call_are_found_by_its_sid(page: tuple[FlaskClient, str],
                                                      demo_app: Flask) -> None:
    client, _token = page
    call_sid, recording_sid = "CA" + "1" * 32, "RE" + "2" * 32
    now = datetime.now(UTC)
    with unit_of_work(runtime(demo_app).sessions) as db:
        start_call(db, call_sid=call_sid, from_number=CALLER, to_number="+77000000000", now=now)
        question, _recording, _new = record_question(
            db, recording_sid=recording_sid, call_sid=call_sid,
            recording_url="http://127.0.0.1/x", duration=3, language="ru", topic=None, now=now)
        db.flush()
        question_id = question.id
    found = client.get(f"/phone/calls/{call_sid}/questions?lang=en").json
    assert found == {"questions": [{
        "id": question_id, "recording": recording_sid, "url": f"/questions/{question_id}",
        "download": "pending", "transcription": "pending", "transcription_label": "waiting",
        "language": "ru"}]}
    russian = client.get(f"/phone/calls/{call_sid}/questions?lang=ru").json
    assert russian["questions"][0]["transcription_label"] == "ожидает"  # type: ignore[index]
    # No model for the language here: said in words a visitor understands.
    with unit_of_work(runtime(demo_app).sessions) as db:
        stored = db.get(Question, question_id)
        assert stored is not None
        stored.transcription_state = TRANSCRIPTION_NO_MODEL
    kazakh = client.get(f"/phone/calls/{call_sid}/questions?lang=kk").json
    assert kazakh["questions"][0]["transcription_label"] == (  # type: ignore[index]
        "бұл компьютерде осы тілдің сөйлеу моделі жоқ: заңгер жазбаны тыңдайды")
    assert client.get(f"/phone/calls/CA{'9' * 32}/questions").json == {"questions": []}
    assert client.get("/phone/calls/not-a-sid/questions").status_code == 404


def test_a_played_prompt_is_described_by_its_text(page: tuple[FlaskClient, str],
                                                  demo_app: Flask) -> None:
    client, _token = page
    text = runtime(demo_app).flow.prompt("kk", "greeting").text
    for name in ("greeting.wav", "greeting-0123456789.wav"):
        url = f"{HOST}/voice/prompts/kk/{name}"
        assert client.get("/phone/prompt-text", query_string={"url": url}).json == {
            "language": "kk", "text": text}
    unknown = client.get("/phone/prompt-text", query_string={"url": "http://x/a.wav"}).json
    assert unknown == {"language": None, "text": None}


def test_a_spoken_prompt_is_shown_as_written(page: tuple[FlaskClient, str],
                                            demo_app: Flask) -> None:
    """A <Say> carries what the voice says ("эс-эм-эс", "один, четыре, один, четыре"): the
    page asks for the prompt as written, without touching its own language (no ?lang=)."""
    client, _token = page
    prompt = runtime(demo_app).flow.prompt("ru", "topic.pension.todo")
    assert prompt.speech != prompt.text and "1414" in prompt.text
    answer = client.get("/phone/prompt-text",
                        query_string={"say": f" {prompt.speech} ", "language": "ru"})
    assert answer.json == {"language": "ru", "text": prompt.text}
    assert "lang=" not in answer.headers.get("Set-Cookie", "")
    for unknown in ({"say": "не подсказка", "language": "ru"}, {"say": prompt.speech}):
        assert client.get("/phone/prompt-text", query_string=unknown).json["text"] is None


def test_the_start_up_warning_names_the_phone(make_app: Callable[[Settings], Flask],
                                              settings: Settings,
                                              caplog: pytest.LogCaptureFixture) -> None:
    make_app(settings.override(demo=True))
    assert any("DEMO MODE" in r.getMessage() and "/phone" in r.getMessage()
               for r in caplog.records)


def test_old_uploads_are_removed(page: tuple[FlaskClient, str], settings: Settings) -> None:
    import os
    import time

    folder = settings.data_dir / "phone-demo"
    folder.mkdir(parents=True)
    old = folder / f"RE{'3' * 32}.wav"
    old.write_bytes(wav_bytes(1.0))
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    assert upload(page, wav_bytes(1.0))[0] == 200
    assert not old.exists()
    assert len(list(Path(folder).iterdir())) == 1
