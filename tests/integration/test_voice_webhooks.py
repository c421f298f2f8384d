"""Voice webhooks, one request at a time, asserting on parsed TwiML and on database rows."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from sqlalchemy import select

from hotline.config import Settings
from hotline.simulator import PhoneSimulator
from hotline.twiml import RENDERED_SECONDS, RenderedDocuments
from storage.models import Call, Caller, Question
from tests.support import (
    BASE_URL,
    CALLER,
    Twilio,
    call_form,
    new_sid,
    row_counts,
    runtime,
    spoken,
    twiml,
)


@pytest.fixture
def database_url(tmp_path) -> str:
    """Webhook handling does not depend on the backend: these run on SQLite only.

    The storage tests and the end-to-end calls cover PostgreSQL.
    """
    return f"sqlite:///{tmp_path / 'hotline.sqlite3'}"


def query(url: str | None) -> dict[str, str]:
    assert url
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_new_caller_hears_both_languages_and_a_language_menu(twilio: Twilio, db) -> None:
    root = twiml(twilio.post("/voice/incoming", call_form()))
    gather = root.find("Gather")
    assert gather is not None
    assert gather.get("numDigits") == "1" and gather.get("input") == "dtmf"
    assert gather.get("actionOnEmptyResult") == "true"
    assert query(gather.get("action")) == {"node": "language", "tries": "0"}
    texts = spoken(gather)
    assert any("Для русского языка" in t for t in texts)
    assert any("Қазақ тілі" in t for t in texts)
    # Silence falls through to the same action, so the menu repeats instead of ending the call.
    redirect = root.find("Redirect")
    assert redirect is not None and redirect.text == gather.get("action")
    with db() as session:
        call = session.scalars(select(Call)).one()
        assert call.caller is not None and call.caller.phone == CALLER


def test_russian_is_said_slowly_with_the_configured_voice(twilio: Twilio) -> None:
    root = twiml(twilio.post("/voice/menu?node=language&tries=0", call_form(Digits="2")))
    says = list(root.iter("Say"))
    assert says and all(s.get("language") == "ru-RU" for s in says)
    assert all(s.get("voice") == "Polly.Tatyana" for s in says)
    assert all(s.find("prosody") is not None and s.find("prosody").get("rate") == "85%"
               for s in says)


def test_choosing_a_language_is_remembered_for_the_next_call(twilio: Twilio, db) -> None:
    first = call_form()
    twilio.post("/voice/incoming", first)
    root = twiml(twilio.post("/voice/menu?node=language&tries=0", {**first, "Digits": "2"}))
    assert query(root.find("Gather").get("action")) == {"node": "main", "lang": "ru",
                                                        "tries": "0"}
    with db() as session:
        assert session.scalars(select(Caller)).one().language == "ru"
    again = twiml(twilio.post("/voice/incoming", call_form()))
    assert query(again.find("Gather").get("action"))["node"] == "main"
    assert any(t.startswith("Здравствуйте") for t in spoken(again))


def test_keys_pressed_are_kept_in_order(twilio: Twilio, db) -> None:
    form = call_form()
    twilio.post("/voice/incoming", form)
    twilio.post("/voice/menu?node=language&tries=0", {**form, "Digits": "2"})
    twilio.post("/voice/menu?node=main&lang=ru&tries=0", {**form, "Digits": "1"})
    twilio.post("/voice/menu?node=pension&lang=ru&topic=pension&tries=0", {**form})
    with db() as session:
        call = session.scalars(select(Call)).one()
        assert [(k["node"], k["digits"]) for k in call.keys] == [
            ("language", "2"), ("main", "1"), ("pension", "")]
        assert call.last_node == "pension"


def test_explainer_offers_again_lawyer_and_main_menu(twilio: Twilio) -> None:
    root = twiml(twilio.post("/voice/menu?node=main&lang=ru&tries=0",
                             call_form(Digits="1")))
    gather = root.find("Gather")
    assert query(gather.get("action")) == {"node": "pension", "lang": "ru", "topic": "pension",
                                           "tries": "0"}
    texts = spoken(gather)
    assert "нажмите два" in texts[-1] and "нажмите ноль" in texts[-1]


def test_the_contact_centre_number_is_said_digit_by_digit(twilio: Twilio) -> None:
    """The content's pronunciation table: <Say> gets "один, четыре, один, четыре", which a
    caller can dial, not "одна тысяча четыреста четырнадцать"."""
    root = twiml(twilio.post("/voice/menu?node=main&lang=ru&tries=0", call_form(Digits="4")))
    said = " ".join(spoken(root))
    assert "по номеру один, четыре, один, четыре" in said
    assert "1414" not in said


def test_asking_a_lawyer_records_with_beep_hash_and_two_minutes(twilio: Twilio) -> None:
    root = twiml(twilio.post("/voice/menu?node=pension&lang=kk&topic=pension&tries=0",
                             call_form(Digits="2")))
    record = root.find("Record")
    assert record is not None
    assert (record.get("maxLength"), record.get("finishOnKey"), record.get("playBeep")) == (
        "120", "#", "true")
    assert query(record.get("action")) == {"lang": "kk", "topic": "pension"}
    assert urlsplit(record.get("action")).path == "/voice/recorded"
    assert urlsplit(record.get("recordingStatusCallback")).path == "/voice/recording-status"
    # Nothing recorded: Twilio moves on to the next verb, which leads to "we did not hear you".
    assert root.find("Redirect").text == record.get("action")


def test_silence_three_times_leads_to_recording_not_a_hang_up(twilio: Twilio) -> None:
    url = "/voice/menu?node=main&lang=ru&tries=0"
    for expected_tries in ("1", "2"):
        root = twiml(twilio.post(url, call_form()))
        action = root.find("Gather").get("action")
        assert query(action)["tries"] == expected_tries
        assert spoken(root)[0].startswith("Извините")
        url = action.removeprefix(BASE_URL)
    root = twiml(twilio.post(url, call_form()))
    assert root.find("Record") is not None and root.find("Hangup") is None


@pytest.mark.parametrize("key", ["7", "#"])
def test_wrong_key_is_explained(app: Flask, twilio: Twilio, key: str) -> None:
    root = twiml(twilio.post("/voice/menu?node=main&lang=ru&tries=0", call_form(Digits=key)))
    gather = root.find("Gather")
    assert query(gather.get("action"))["tries"] == "1"
    assert spoken(root)[0] == runtime(app).flow.prompt("ru", "nav.wrong_key").text
    # # is sent as a key (Twilio's default would end the Gather on it with no digits, and the
    # caller would hear "we did not hear you").
    assert gather.get("finishOnKey") == ""


def test_call_status_is_recorded(twilio: Twilio, db) -> None:
    form = call_form()
    twilio.post("/voice/incoming", form)
    response = twilio.post("/voice/status", {**form, "CallStatus": "completed",
                                             "CallDuration": "73"})
    assert response.status_code == 204
    with db() as session:
        call = session.scalars(select(Call)).one()
        assert (call.status, call.duration) == ("completed", 73)
        assert call.ended_at is not None


@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl"])
@pytest.mark.parametrize("path", ["/voice/incoming", "/voice/menu?node=main&lang=ru",
                                  "/voice/recorded?lang=ru", "/voice/recording-status",
                                  "/voice/status", "/voice/show?node=main"])
def test_unsigned_or_wrongly_signed_requests_are_refused(twilio: Twilio, db, path: str,
                                                         signature: str) -> None:
    form = call_form(Digits="1", CallStatus="completed", RecordingSid="RE" + "a" * 32,
                     RecordingUrl="https://api.twilio.com/x", RecordingStatus="completed")
    response = twilio.post(path, form, signature=signature)
    assert response.status_code == 403
    with db() as session:
        assert set(row_counts(session).values()) == {0}


def test_a_signature_for_other_parameters_is_refused(twilio: Twilio, db) -> None:
    form = call_form()
    signature = twilio.validator.compute_signature(BASE_URL + "/voice/incoming",
                                                   {**form, "From": "+77019999999"})
    assert twilio.post("/voice/incoming", form, signature=signature).status_code == 403
    with db() as session:
        assert row_counts(session)["calls"] == 0


@pytest.mark.parametrize("form", [{"CallSid": "nonsense"}, {"CallSid": ""},
                                  {"From": "+77011234567"}])
def test_malformed_webhooks_get_400_and_write_nothing(twilio: Twilio, db, form) -> None:
    assert twilio.post("/voice/incoming", form).status_code == 400
    with db() as session:
        assert set(row_counts(session).values()) == {0}


def test_an_unknown_node_leads_back_to_the_main_menu(twilio: Twilio) -> None:
    # A URL from before a content change: no 400 (Twilio would say "application error").
    root = twiml(twilio.post("/voice/menu?node=housing&lang=ru", call_form(Digits="1")))
    assert query(root.find("Gather").get("action"))["node"] == "main"


def test_when_the_calls_row_cannot_be_written_the_caller_still_goes_through_the_menus(
    app: Flask, twilio: Twilio, db, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database cannot be written (here: a real SQLite error, a file in a folder that does
    not exist): the caller still hears the language menu, the main menu and an explainer,
    no apology and no hang-up after the first key, and a question left then has the caller's
    number (from the request) once the database answers again."""
    from sqlalchemy import create_engine

    rt = runtime(app)
    flow = rt.flow
    broken = create_engine(f"sqlite:///{tmp_path / 'missing' / 'hotline.sqlite3'}")
    monkeypatch.setattr(rt, "webhook_engine", broken)
    form = call_form()
    root = twiml(twilio.post("/voice/incoming", form))
    assert query(root.find("Gather").get("action"))["node"] == "language"
    main = twiml(twilio.post_url(root.find("Gather").get("action"), {**form, "Digits": "2"}))
    assert query(main.find("Gather").get("action")) == {"node": "main", "lang": "ru",
                                                       "tries": "0"}
    explainer = twiml(twilio.post_url(main.find("Gather").get("action"),
                                      {**form, "Digits": "1"}))
    assert spoken(explainer)[0] == flow.prompt("ru", "topic.pension.fact").speech
    assert flow.prompt("ru", "error.apology").speech not in spoken(explainer)
    record = twiml(twilio.post_url(explainer.find("Gather").get("action"),
                                   {**form, "Digits": "2"}))
    with db() as session:
        assert row_counts(session)["calls"] == 0  # nothing of the call was written
    monkeypatch.undo()  # the database is back when the recording comes in
    done = twiml(twilio.post_url(record.find("Record").get("action"), {
        **form, "RecordingSid": new_sid("RE"), "RecordingDuration": "9",
        "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"}))
    assert spoken(done)[0] == flow.prompt("ru", "record.done").speech
    with db() as session:
        question = session.scalars(select(Question)).one()
        assert question.caller is not None and question.caller.phone == CALLER
        assert question.call is not None and question.call.call_sid == form["CallSid"]
        assert question.topic == "pension"


@pytest.mark.parametrize("duration", ["-1", "9.5", "²", "x" * 20])
def test_a_recording_whose_duration_is_odd_is_kept_and_promised(
        app: Flask, twilio: Twilio, db, duration: str) -> None:
    """The duration is only told, not needed: a recording whose RecordingDuration is not a
    count of seconds is stored once, without one, from either webhook, and the caller hears
    the promise (a 400 would be Twilio's "application error" and the question lost)."""
    flow = runtime(app).flow
    form = call_form(RecordingSid=new_sid("RE"), RecordingDuration=duration,
                     RecordingUrl="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE2")
    done = twiml(twilio.post("/voice/recorded?lang=ru&topic=pension", form))
    assert spoken(done)[0] == flow.prompt("ru", "record.done").speech
    status = twilio.post("/voice/recording-status", {**form, "RecordingStatus": "completed"})
    assert status.status_code == 204
    with db() as session:
        question = session.scalars(select(Question)).one()
        assert question.recording is not None and question.recording.duration is None


def test_failures_in_a_row_end_with_call_again_later_not_a_loop(
    app: Flask, twilio: Twilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = runtime(app).flow

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug in the content")

    monkeypatch.setattr(flow, "press", broken)
    root = twiml(twilio.post("/voice/menu?node=main&lang=ru&tries=0", call_form(Digits="1")))
    menu = twiml(twilio.post_url(root.find("Redirect").text, call_form()))
    action = menu.find("Gather").get("action")
    assert query(action)["err"] == "1"
    last = twiml(twilio.post_url(action, call_form(Digits="1")))
    assert spoken(last) == [runtime(app).flow.prompt("ru", "error.later").text]
    assert last.find("Hangup") is not None


def test_after_an_apology_a_later_failure_in_the_same_call_says_call_again_later(
    app: Flask, twilio: Twilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = runtime(app).flow
    press, failing = flow.press, [True]

    def flaky(*args: object, **kwargs: object) -> object:
        if failing[0]:
            raise RuntimeError("database down")
        return press(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(flow, "press", flaky)
    apology = twiml(twilio.post("/voice/menu?node=main&lang=ru&tries=0", call_form(Digits="1")))
    menu = twiml(twilio.post_url(apology.find("Redirect").text, call_form()))
    failing[0] = False
    # A key press that works: the pension explainer, and the apology is still remembered.
    explainer = twiml(twilio.post_url(menu.find("Gather").get("action"), call_form(Digits="1")))
    action = explainer.find("Gather").get("action")
    assert (query(action)["node"], query(action)["err"]) == ("pension", "1")
    failing[0] = True
    last = twiml(twilio.post_url(action, call_form(Digits="2")))
    assert spoken(last) == [flow.prompt("ru", "error.later").text]
    assert last.find("Hangup") is not None


@pytest.mark.parametrize("catch_up", [True, False])
def test_a_question_that_cannot_be_stored_is_promised_only_where_the_catch_up_keeps_it(
    make_app, settings: Settings, db, monkeypatch: pytest.MonkeyPatch, catch_up: bool
) -> None:
    from hotline import voice

    def database_down(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database down")

    app = make_app(settings.override(recording_catchup_hours=24 if catch_up else 0))
    twilio = Twilio(app)
    monkeypatch.setattr(voice.questions, "record_question", database_down)
    form = call_form(RecordingSid="RE" + "7" * 32, RecordingDuration="9",
                     RecordingUrl="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE7")
    root = twiml(twilio.post("/voice/recorded?lang=ru&topic=pension", form))
    flow = runtime(app).flow
    if catch_up:
        # The recording is at Twilio and the catch-up stores it: the promise, and no way back
        # to recording the same question again.
        assert spoken(root)[0] == flow.prompt("ru", "record.done").text
        assert query(root.find("Gather").get("action"))["node"] == "done"
    else:
        assert spoken(root) == [flow.prompt("ru", "error.apology").text]
        assert query(root.find("Redirect").text)["err"] == "1"
    with db() as session:
        assert row_counts(session)["questions"] == 0


def test_a_question_is_promised_even_when_the_queue_is_down(
    app: Flask, twilio: Twilio, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hotline import voice

    def queue_down(*_args: object, **_kwargs: object) -> None:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(voice.jobs, "download_recording_job", queue_down)
    sid = new_sid("CA")
    twiml(twilio.post("/voice/incoming", call_form(sid)))
    form = call_form(sid, RecordingSid="RE" + "b" * 32, RecordingUrl="https://api.twilio.com/x",
                     RecordingDuration="7")
    root = twiml(twilio.post("/voice/recorded?lang=ru", form))
    assert spoken(root)[0] == runtime(app).flow.prompt("ru", "record.done").text
    with db() as session:
        assert row_counts(session)["recordings"] == 1  # the sweep will fetch it


def test_a_caller_without_a_language_still_hears_the_promise(app: Flask, twilio: Twilio) -> None:
    sid = new_sid("CA")
    twiml(twilio.post("/voice/incoming", call_form(sid)))
    form = call_form(sid, RecordingSid="RE" + "c" * 32, RecordingUrl="https://api.twilio.com/x",
                     RecordingDuration="7")
    root = twiml(twilio.post("/voice/recorded", form))
    flow = runtime(app).flow
    texts = spoken(root)
    assert flow.prompt("kk", "record.done").text in texts
    assert flow.prompt("ru", "record.done").text in texts
    assert root.find("Hangup") is not None


@pytest.mark.parametrize("hidden", ["anonymous", "Restricted", "", "+266696687"])
@pytest.mark.parametrize("lang", ["kk", "ru", None])
def test_a_hidden_number_is_not_promised_a_callback(app: Flask, twilio: Twilio, db,
                                                    hidden: str, lang: str | None) -> None:
    sid = new_sid("CA")
    twiml(twilio.post("/voice/incoming", call_form(sid, From=hidden)))
    form = call_form(sid, From=hidden, RecordingSid=new_sid("RE"),
                     RecordingUrl="https://api.twilio.com/x", RecordingDuration="7")
    root = twiml(twilio.post("/voice/recorded" + (f"?lang={lang}" if lang else ""), form))
    flow = runtime(app).flow
    texts = spoken(root)
    for code in ([lang] if lang else ["kk", "ru"]):
        assert flow.prompt(code, "record.done.no_number").text in texts
        assert flow.prompt(code, "record.done").text not in texts
    # The question is kept all the same (the caller may say a number in it).
    with db() as session:
        assert row_counts(session)["questions"] == 1


@pytest.mark.parametrize("hidden", ["anonymous", "+266696687"])
def test_a_hidden_number_hears_before_the_beep_that_no_lawyer_can_call_back(
        app: Flask, twilio: Twilio, hidden: str) -> None:
    flow = runtime(app).flow
    warning = flow.prompt("ru", "record.hidden_number").text
    # 0 on the main menu: a lawyer.
    root = twiml(twilio.post("/voice/menu?node=main&lang=ru&tries=0",
                             call_form(From=hidden, Digits="0")))
    assert root.find("Record") is not None
    assert spoken(root)[0] == warning
    # Silence on the language menu ends in the offer: told in both languages.
    offer = twiml(twilio.post("/voice/menu?node=language&tries=2", call_form(From=hidden)))
    assert offer.find("Record") is not None
    assert spoken(offer)[:2] == [flow.prompt(code, "record.hidden_number").text
                                 for code in ("kk", "ru")]
    # An open number hears no such thing, and nor does a hidden one in a menu.
    assert warning not in spoken(twiml(twilio.post(
        "/voice/menu?node=main&lang=ru&tries=0", call_form(Digits="0"))))
    assert warning not in spoken(twiml(twilio.post(
        "/voice/menu?node=main&lang=ru&tries=0", call_form(From=hidden, Digits="1"))))


def test_an_empty_recording_without_a_language_is_said_and_the_call_goes_on(
        app: Flask, twilio: Twilio, db) -> None:
    root = twiml(twilio.post("/voice/recorded", call_form(RecordingDuration="0")))
    flow = runtime(app).flow
    texts = spoken(root)
    assert [flow.prompt(code, "record.not_heard").text for code in ("kk", "ru")] == texts[:2]
    assert root.find("Hangup") is None and root.find("Gather") is not None
    with db() as session:
        assert row_counts(session)["questions"] == 0


def test_wrong_keys_after_an_empty_recording_lead_on_not_round_and_round(
        app: Flask, phone: PhoneSimulator, db) -> None:
    """A new caller who never chose a language records nothing, then presses keys that are
    not on the language menu: told twice, as anywhere, then offered to record once more; a
    second empty recording says so, and goodbye. The line is never left going round."""
    flow = runtime(app).flow
    log = phone.call(["", "", "", "", "5", "5", "5", "", "5"])
    texts = log.texts()
    after = texts[texts.index(flow.prompt("ru", "record.not_heard").text):]
    assert after.count(flow.prompt("ru", "nav.wrong_key").text) == 2
    assert flow.prompt("ru", "record.offer").text in after
    assert texts[-1] == flow.prompt("ru", "goodbye").text
    assert log.hung_up_by == "hotline"
    with db() as session:
        assert row_counts(session)["questions"] == 0


def test_an_empty_recording_in_a_status_callback_is_not_a_question(twilio: Twilio, db) -> None:
    form = call_form(RecordingSid="RE" + "d" * 32, RecordingUrl="https://api.twilio.com/x",
                     RecordingDuration="0", RecordingStatus="completed")
    assert twilio.post("/voice/recording-status?lang=ru", form).status_code == 204
    with db() as session:
        assert row_counts(session)["questions"] == 0


@pytest.fixture
def proxied_app(make_app, settings: Settings) -> Flask:
    return make_app(settings.override(public_base_url="https://public.example.kz"))


def test_behind_a_proxy_the_public_url_is_checked(proxied_app: Flask) -> None:
    twilio = Twilio(proxied_app)
    form = call_form()
    ok = twilio.post("/voice/incoming", form, base_url="http://10.0.0.5:8000",
                     signed_url="https://public.example.kz/voice/incoming")
    root = twiml(ok)
    assert root.find("Gather").get("action").startswith("https://public.example.kz/voice/menu")
    internal = twilio.post("/voice/incoming", call_form(), base_url="http://10.0.0.5:8000")
    assert internal.status_code == 403


def test_proxy_headers_are_trusted_when_configured(make_app, settings: Settings) -> None:
    twilio = Twilio(make_app(settings.override(proxy_hops=1)))
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hotline.example.kz"}
    response = twilio.post("/voice/incoming", call_form(), base_url="http://127.0.0.1:5000",
                           signed_url="https://hotline.example.kz/voice/incoming",
                           headers=headers)
    assert twiml(response).find("Gather").get("action").startswith("https://hotline.example.kz/")


def test_an_exception_becomes_an_apology_and_a_way_on(app: Flask, twilio: Twilio,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(runtime(app).flow, "press", broken)
    root = twiml(twilio.post("/voice/menu?node=main&lang=ru&tries=0", call_form(Digits="1")))
    assert spoken(root) == [runtime(app).flow.prompt("ru", "error.apology").text]
    redirect = root.find("Redirect")
    assert redirect is not None and query(redirect.text) == {"node": "main", "lang": "ru",
                                                             "err": "1"}
    # Where the apology leads works, so the caller is back in the main menu.
    back = twiml(twilio.post_url(redirect.text, call_form()))
    assert query(back.find("Gather").get("action"))["node"] == "main"


def test_a_second_failure_says_goodbye_instead_of_looping(app: Flask, twilio: Twilio,
                                                          monkeypatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("still broken")

    monkeypatch.setattr(runtime(app).flow, "show", broken)
    root = twiml(twilio.post("/voice/show?node=main&lang=kk&err=1", call_form()))
    assert root.find("Hangup") is not None
    # The caller is told to call again later, not cut off in silence.
    assert spoken(root) == [runtime(app).flow.prompt("kk", "error.later").text]


def test_when_even_the_apology_fails_both_languages_hear_call_again_later(
        app: Flask, twilio: Twilio, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("content unreadable")

    flow = runtime(app).flow
    said = {code: flow.prompt(code, "error.later").text for code in ("kk", "ru")}
    monkeypatch.setattr(flow, "show", broken)
    monkeypatch.setattr(flow, "say", broken)
    root = twiml(twilio.post("/voice/show?node=main&lang=kk", call_form()))
    assert spoken(root) == [said["kk"], said["ru"]]
    assert root.find("Hangup") is not None


def test_the_same_screen_reached_by_another_host_name_gets_that_host_in_its_urls(
        twilio: Twilio) -> None:
    for base in ("http://hotline-a.example", "http://hotline-b.example:8080"):
        root = twiml(twilio.post("/voice/incoming", call_form(), base_url=base))
        gather = root.find("Gather")
        assert gather is not None and gather.get("action", "").startswith(f"{base}/voice/menu?")


def test_a_prompt_recorded_later_is_played_once_the_rendered_document_expires(
        app: Flask, twilio: Twilio, settings: Settings, question_wav) -> None:
    clock = [0.0]
    runtime(app).documents = RenderedDocuments(timer=lambda: clock[0])
    prompt = runtime(app).flow.start(None).prompts[0]
    recording = runtime(app).prompts.recorded_path(prompt)
    before = twiml(twilio.post("/voice/incoming", call_form()))
    assert not any((play.text or "").endswith(recording.name) for play in before.iter("Play"))
    recording.parent.mkdir(parents=True, exist_ok=True)
    recording.write_bytes(question_wav.read_bytes())

    clock[0] += RENDERED_SECONDS - 1  # the document rendered a moment ago is answered again
    again = twiml(twilio.post("/voice/incoming", call_form()))
    assert [el.tag for el in again.iter()] == [el.tag for el in before.iter()]
    clock[0] += 2
    after = twiml(twilio.post("/voice/incoming", call_form()))
    played = [play.text or "" for play in after.iter("Play")]
    assert any(urlsplit(url).path == f"/voice/prompts/{prompt.language}/{recording.name}"
               for url in played), played


def test_a_prompts_audio_may_be_cached_at_its_url_which_changes_with_the_file(
        app: Flask, twilio: Twilio, question_wav) -> None:
    """Twilio's media cache keeps what Cache-Control allows: a week at a URL that names the
    file's bytes, so a menu's <Play>s start without asking this server each time."""
    clock = [0.0]
    runtime(app).documents = RenderedDocuments(timer=lambda: clock[0])
    client = app.test_client()

    def first_play() -> str:
        clock[0] += RENDERED_SECONDS + 1
        plays = twiml(twilio.post("/voice/incoming", call_form())).iter("Play")
        return next(play.text or "" for play in plays)

    prompt = runtime(app).flow.start(None).prompts[0]
    rendered = runtime(app).prompts.rendered_path(prompt)
    rendered.parent.mkdir(parents=True, exist_ok=True)
    rendered.write_bytes(b"RIFF....WAVE, as espeak-ng says it")
    url = first_play()
    path, version = urlsplit(url).path, query(url)["v"]
    assert path.endswith(rendered.name)
    cached = client.get(f"{path}?v={version}")
    assert cached.status_code == 200
    assert (cached.cache_control.public, cached.cache_control.max_age) == (True, 7 * 24 * 3600)
    cached.close()
    # A person records the prompt: another file, another URL.
    recording = runtime(app).prompts.recorded_path(prompt)
    recording.write_bytes(question_wav.read_bytes())
    new_url = first_play()
    assert query(new_url)["v"] != version
    fresh = client.get(new_url)
    assert fresh.get_data() == question_wav.read_bytes() and fresh.cache_control.max_age
    fresh.close()
    # An old or missing version is served, but never cached.
    for stale in (f"{urlsplit(new_url).path}?v={version}", urlsplit(new_url).path):
        response = client.get(stale)
        assert response.status_code == 200 and response.cache_control.no_cache, stale
        assert response.cache_control.max_age is None
        response.close()


@pytest.mark.parametrize("path", ["/voice/incoming", "/voice/menu?node=language&tries=0",
                                  "/voice/menu?node=main&lang=ru&tries=0"])
def test_webhook_answers_set_no_cookie(twilio: Twilio, path: str) -> None:
    response = twilio.post(path, call_form(Digits="2"))
    twiml(response)
    assert "Set-Cookie" not in response.headers


def test_after_silence_on_nothing_was_recorded_one_more_offer_then_goodbye(
        app: Flask, twilio: Twilio) -> None:
    """A caller who cannot use the keypad, whose recording was empty: after the screen's two
    repeats, the offer to record once more (its action says so), and a second empty
    recording says nothing was saved and goodbye, instead of going round forever."""
    flow = runtime(app).flow
    form = call_form()
    screen = twiml(twilio.post("/voice/recorded?lang=ru", {**form, "RecordingDuration": "0"}))
    for _ in range(3):
        screen = twiml(twilio.post_url(screen.find("Gather").get("action"), form))
    record = screen.find("Record")
    assert record is not None and query(record.get("action"))["tries"] == "1"
    last = twiml(twilio.post_url(record.get("action"), {**form, "RecordingDuration": "0"}))
    assert spoken(last) == [flow.prompt("ru", "record.not_heard").speech,
                            flow.prompt("ru", "goodbye").speech]
    assert last.find("Hangup") is not None
