"""Render flow screens as TwiML: the one place where TwiML is built."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

from cachetools import TTLCache
from twilio.twiml.voice_response import Gather, Record, VoiceResponse

from flows.engine import Prompt, Screen
from hotline.config import Settings

log = logging.getLogger(__name__)

# Languages Twilio can speak with <Say>; Kazakh has no voice, so it is always <Play>ed.
SAY_LANGUAGES = {"ru": "ru-RU"}
MAX_RECORDING_SECONDS = 120
RECORDING_SILENCE_SECONDS = 10

PromptUrl = Callable[[Prompt], str | None]
# How long a rendered document is reused: a prompt recorded or rendered meanwhile is played
# from then on (before, the document still says it with <Say>, or plays the older file).
RENDERED_SECONDS = 60.0


class RenderedDocuments:
    """TwiML documents already rendered, by what they depend on, for RENDERED_SECONDS.

    A menu's document depends only on the screen (node, language, tries, topic, prompts), the
    URLs it carries and which prompt audio files exist; most webhooks answer one of a few
    hundred such documents. Building one (twilio's VoiceResponse, ElementTree, a file lookup
    per prompt, url_for per URL) cost about as much as the database work of the request
    (bench/webhook_throughput.py).
    """

    def __init__(self, seconds: float = RENDERED_SECONDS, size: int = 2048,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self._documents: TTLCache[Hashable, str] = TTLCache(maxsize=size, ttl=seconds,
                                                            timer=timer)
        self._lock = threading.Lock()

    def get(self, key: Hashable, render: Callable[[], str]) -> str:
        """Return the document for key, rendering it with render() when it is not at hand."""
        with self._lock:
            document = self._documents.get(key)
        if document is None:
            # Rendered outside the lock: two threads may both render it, and that is harmless.
            document = render()
            with self._lock:
                self._documents[key] = document
        return document


def _speak(parent: VoiceResponse | Gather, prompt: Prompt, audio_url: PromptUrl,
           settings: Settings) -> None:
    url = audio_url(prompt)
    if url:
        parent.play(url)
        return
    say_language = SAY_LANGUAGES.get(prompt.language)
    if say_language is None:
        # No audio yet (run `hotline prompts render`): read the Cyrillic text with the
        # Russian voice rather than leave the caller in silence.
        log.warning("no audio for %s prompt %s; falling back to <Say>", prompt.language, prompt.key)
        say_language = "ru-RU"
    say = parent.say(language=say_language, voice=settings.russian_voice)
    say.prosody(prompt.speech, rate=settings.speech_rate)


def render_screen(
    screen: Screen,
    *,
    action_url: str,
    recorded_url: str,
    recording_status_url: str,
    audio_url: PromptUrl,
    settings: Settings,
) -> str:
    """Return the TwiML document for screen; action URLs carry the caller's place in the tree."""
    response = VoiceResponse()
    if screen.wait == "key":
        # finishOnKey "": # is a key like any other (a wrong one in a menu), not Twilio's
        # default "done", which would send no digits and be answered "we did not hear you".
        gather = Gather(input="dtmf", num_digits=1, timeout=settings.gather_timeout,
                        action=action_url, method="POST", action_on_empty_result=True,
                        finish_on_key="")
        for prompt in screen.prompts:
            _speak(gather, prompt, audio_url, settings)
        response.append(gather)
        # Providers without actionOnEmptyResult fall through to here: same URL, no Digits.
        response.redirect(action_url, method="POST")
    elif screen.wait == "record":
        for prompt in screen.prompts:
            _speak(response, prompt, audio_url, settings)
        response.append(Record(
            action=recorded_url, method="POST", max_length=MAX_RECORDING_SECONDS,
            finish_on_key="#", play_beep=True, timeout=RECORDING_SILENCE_SECONDS,
            trim="trim-silence", recording_status_callback=recording_status_url,
            recording_status_callback_method="POST",
            recording_status_callback_event="completed",
        ))
        # Reached only when nothing was recorded: the action tells the caller so.
        response.redirect(recorded_url, method="POST")
    else:
        for prompt in screen.prompts:
            _speak(response, prompt, audio_url, settings)
        response.hangup()
    return str(response)


def render_prompts_then(
    prompts: tuple[Prompt, ...], *, redirect_url: str | None, audio_url: PromptUrl,
    settings: Settings,
) -> str:
    """Return TwiML that speaks prompts, then redirects (or hangs up with nowhere to go)."""
    response = VoiceResponse()
    for prompt in prompts:
        _speak(response, prompt, audio_url, settings)
    if redirect_url:
        response.redirect(redirect_url, method="POST")
    else:
        response.hangup()
    return str(response)
