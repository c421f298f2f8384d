"""The phone-menu engine: given where a caller is and what they pressed, what comes next.

Pure logic over validated content: no Flask, no Twilio, no database. The web layer renders a
`Screen` as TwiML and carries `node`, `language`, `tries` and `topic` in the next action URL.

Keys mean the same everywhere (DESIGN.md, with the issue's choice for 9):
``0`` main menu (in the main menu: ask a lawyer), ``*`` back, ``9`` change the language,
``#`` ends a recording. Silence or a wrong key repeats the screen up to twice; after that the
caller is offered to record a question, so nobody is stuck in a menu they cannot use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import wraps
from typing import Any, Literal, TypeVar

from flows.content import EXPLAINER_PARTS, Content

LANGUAGE = "language"
MAIN = "main"
RECORD = "record"
OFFER = "offer"
DONE = "done"
# After the question of a caller whose number is hidden was saved: the same keys as DONE, but
# its repeats say again that nobody can call back (not DONE's promise of a callback).
DONE_NO_NUMBER = "done_no_number"
EMPTY = "empty"
GOODBYE = "goodbye"
SPECIAL_NODES = frozenset({LANGUAGE, RECORD, OFFER, DONE, DONE_NO_NUMBER, EMPTY, GOODBYE})
MAX_REPEATS = 2
# The language menu's tries after an empty recording by a caller who never chose a language:
# past MAX_REPEATS, so that silence there says goodbye instead of offering to record again
# (a phone left off the hook would otherwise go round forever). Keys that are not on the menu
# repeat it up to MAX_REPEATS times there too, then the offer to record comes once more.
AFTER_EMPTY_RECORDING = MAX_REPEATS + 1
# An offer to record made after silence on the "nothing was recorded" screen carries these
# tries (to the recording's action URL): a second empty recording then says goodbye instead
# of starting over (not_recorded).
RECORDING_AGAIN = 1
# The main menu's (or, for one who never chose a language, the language menu's) tries after the
# greeting of a returning caller whose question waits (start):
# counted from here, so that silence through its repeats ends with "your question is waiting"
# and goodbye, not the offer to record: they called to ask after it, and what they would say
# into the recorder is the same question again. A key pressed there counts on as usual.
# Above AFTER_EMPTY_RECORDING's repeats, so that the two never meet.
WAITING_CALLER = AFTER_EMPTY_RECORDING + MAX_REPEATS + 1

Wait = Literal["key", "record", "hangup"]

# The callback promise says its number as a word, in the form the sentence needs: Russian
# "в течение трёх рабочих дней" (genitive), Kazakh "үш жұмыс күні ішінде".
DAY_WORDS = {
    "ru": {2: "двух", 3: "трёх", 4: "четырёх", 5: "пяти", 6: "шести", 7: "семи", 8: "восьми",
           9: "девяти", 10: "десяти"},
    "kk": {2: "екі", 3: "үш", 4: "төрт", 5: "бес", 6: "алты", 7: "жеті", 8: "сегіз",
           9: "тоғыз", 10: "он"},
}
CALLBACK_DAYS_RANGE = range(2, 11)
# Screens a Flow keeps, by how they were asked for: every menu and explainer in both languages
# with its repeats is a few hundred; forged action URLs (random topics) cannot grow it past this.
MAX_REMEMBERED_SCREENS = 4096

F = TypeVar("F", bound=Callable[..., Any])


class UnknownNode(Exception):
    """A node id that the content does not define (a stale or forged action URL)."""


@dataclass(frozen=True)
class Prompt:
    """One sentence to speak, in one language, with a stable key for its audio file."""

    language: str
    key: str
    # As written: shown on screens and read by a person recording the prompt.
    text: str
    # As a synthesiser is to say it (flows.content.Pronunciation); "" when the same as text.
    spoken: str = ""

    @property
    def speech(self) -> str:
        """What espeak-ng or Twilio's <Say> is given."""
        return self.spoken or self.text

    @property
    def audio_name(self) -> str:
        """File name of rendered audio: the key plus a hash of the exact words said."""
        digest = hashlib.sha1(self.speech.encode("utf-8")).hexdigest()[:10]
        return f"{self.key}-{digest}.wav"


@dataclass(frozen=True)
class Screen:
    """What the caller hears next, and what the phone then waits for."""

    node: str
    language: str | None
    prompts: tuple[Prompt, ...]
    wait: Wait
    tries: int = 0
    topic: str | None = None
    remember_language: str | None = None


def _remembered(method: F) -> F:
    """Remember what a Flow method answered for these arguments (they decide it alone).

    Content does not change while a Flow lives, and a Screen is immutable: each webhook asks
    for one of a few hundred screens, and building one (prompts, placeholders, copies) cost a
    twentieth of a webhook's time in the application (bench/webhook_throughput.py). A call that
    raises (UnknownNode) is not remembered.
    """

    @wraps(method)
    def remembered(self: Flow, *args: Any, **kwargs: Any) -> Any:
        key = (method.__name__, args, tuple(sorted(kwargs.items())))
        screen = self._screens.get(key)
        if screen is None:
            screen = method(self, *args, **kwargs)
            if len(self._screens) < MAX_REMEMBERED_SCREENS:
                self._screens[key] = screen
        return screen

    return remembered  # type: ignore[return-value]


class Flow:
    """The phone tree of one content folder, with the configured callback promise."""

    def __init__(self, content: Content, callback_days: int = 3) -> None:
        self.content = content
        self.callback_days = callback_days
        self._screens: dict[tuple[Any, ...], Screen] = {}

    def prompt(self, language: str, key: str) -> Prompt:
        """Return one prompt with its placeholders filled in."""
        days = DAY_WORDS.get(language, {}).get(self.callback_days, str(self.callback_days))
        text = self.content.text(language, key).replace("{days}", days).strip()
        spoken = self.content.spoken(language, text)
        return Prompt(language, key, text, spoken if spoken != text else "")

    def say(self, language: str | None, *keys: str) -> tuple[Prompt, ...]:
        """Return prompts in one language, or in every language when it is not known yet."""
        languages = (language,) if language else self.content.language_codes
        return tuple(self.prompt(lang, key) for lang in languages for key in keys)

    def all_prompts(self, language: str) -> Iterator[Prompt]:
        """Yield every prompt a caller can hear in language (for rendering audio)."""
        for key in sorted(self.content.prompts[language]):
            yield self.prompt(language, key)

    def known_language(self, language: str | None) -> str | None:
        """Return language if the content speaks it, else None."""
        return language if language in self.content.language_codes else None

    @_remembered
    def start(self, language: str | None, waiting: bool = False) -> Screen:
        """Greet a caller: returning callers go straight to the main menu. A returning caller
        whose question waits for a lawyer (waiting) hears first that it does and that the
        lawyer calls from the hotline's number: an anxious resident who calls to ask need
        not record the same question again (the menu still lets them ask another). One who
        never chose a language (they left the question after silence on the language menu)
        hears it in every language, before the language menu. Silence on the menu after it
        ends with "your question is waiting" and goodbye rather than the offer to record
        (WAITING_CALLER)."""
        language = self.known_language(language)
        screen = self.show(MAIN if language else LANGUAGE, language,
                           WAITING_CALLER if waiting else 0)
        said = ("greeting", "queue.waiting") if waiting else ("greeting",)
        return _with_preface(screen, self.say(language, *said))

    @_remembered
    def show(
        self, node: str, language: str | None, tries: int = 0, topic: str | None = None
    ) -> Screen:
        """Build the screen for node: its prompts and what it waits for."""
        language = self.known_language(language)
        if node != LANGUAGE and node not in (OFFER, GOODBYE) and language is None:
            node = LANGUAGE
        content = self.content
        if node == LANGUAGE:
            # Always in every language; a language already known (9 pressed in a menu) rides
            # along in the screen, so that silence or * there goes back to it (_press_language).
            return Screen(LANGUAGE, language, self.say(None, "language.choose"), "key", tries)
        assert language is not None or node in (OFFER, GOODBYE)
        if node in content.menus:
            menu = content.menus[node]
            keys_said = [f"menu.{node}", *(f"menu.{node}.{k}" for k in menu.options)]
            keys_said += ["nav.lawyer", "nav.language"] if node == MAIN else ["nav.main"]
            prompts = self.say(language, *keys_said)
            if node == MAIN:
                # "9 changes the language" in every other language too: a Kazakh-speaking
                # elder in a Russian menu (remembered from a grandchild's Russian SMS, say)
                # hears in Kazakh how to get out of it.
                prompts += tuple(self.prompt(other, "nav.language")
                                 for other in self.content.language_codes if other != language)
            return Screen(node, language, prompts, "key", tries)
        if node in content.topics:
            parts = [f"topic.{node}.{part}" for part in EXPLAINER_PARTS] if tries == 0 else []
            prompts = self.say(language, *parts, "explainer.menu")
            return Screen(node, language, prompts, "key", tries, topic=node)
        if node == RECORD:
            return Screen(RECORD, language, self.say(language, "record.intro"), "record",
                          topic=topic)
        if node == OFFER:
            # Without a language: both offers, then both "after the beep" right before it, so
            # the first language's caller does not start speaking through the second's offer.
            prompts = self.say(language, "record.offer") + self.say(language, "record.intro")
            return Screen(OFFER, language, prompts, "record", tries, topic=topic)
        if node in (DONE, DONE_NO_NUMBER):
            done = "record.done" if node == DONE else "record.done.no_number"
            return Screen(node, language, self.say(language, done, "record.done.menu"), "key",
                          tries)
        if node == EMPTY:
            return Screen(EMPTY, language, self.say(language, "record.empty"), "key", tries,
                          topic=topic)
        if node == GOODBYE:
            return Screen(GOODBYE, language, self.say(language, "goodbye"), "hangup")
        raise UnknownNode(node)

    @_remembered
    def press(
        self,
        node: str,
        language: str | None,
        digits: str | None,
        tries: int = 0,
        topic: str | None = None,
    ) -> Screen:
        """Handle the keys pressed (or silence, when digits is empty) on node."""
        if node not in SPECIAL_NODES and node not in self.content.menus and (
            node not in self.content.topics
        ):
            raise UnknownNode(node)
        language = self.known_language(language)
        key = (digits or "").strip()[:1]
        if node == LANGUAGE or language is None:
            return self._press_language(key, tries, language)
        if node in (DONE, DONE_NO_NUMBER):
            # After the promise the keys mean what they mean everywhere (0 and * the main
            # menu, 9 the language); silence ends the call politely. Another key is a caller
            # still listening (pressing 1 to add to the question, say): "no such key" and the
            # promise and its menu again, up to MAX_REPEATS times, then goodbye.
            if key in ("0", "*"):
                return self.show(MAIN, language)
            if key == "9":
                return self.show(LANGUAGE, language)
            if not key or tries >= MAX_REPEATS:
                return self.show(GOODBYE, language)
            return _with_preface(self.show(node, language, tries + 1),
                                 self.say(language, "nav.wrong_key"))
        if key == "9":
            return self.show(LANGUAGE, language)
        if key == "0":
            return self.show(RECORD if node == MAIN else MAIN, language)
        if key == "*":
            # The main menu's "back" is the main menu: a waiting caller's stays theirs.
            again = WAITING_CALLER if node == MAIN and tries >= WAITING_CALLER else 0
            return self.show(self._parent(node), language, again)
        if node in self.content.menus:
            target = self.content.menus[node].options.get(key)
            if target:
                return self.show(target, language)
        elif node in self.content.topics:
            if key == "1":
                return self.show(node, language)
            if key == "2":
                return self.show(RECORD, language, topic=node)
        elif node == EMPTY and key == "1":
            return self.show(RECORD, language, topic=topic)
        return self._repeat(node, language, key, tries, topic)

    def topic_after(self, steps: Iterable[tuple[str, str]]) -> str | None:
        """The topic a recording made after these menu steps is about, as the action URL of its
        <Record> would have carried it; steps are a call's (node, keys pressed), in order.

        The menus are replayed: a topic travels from screen to screen as it does in the action
        URLs (an explainer gives its own; the main menu and the language menu none). Repeats
        are replayed as first tries, which keep the topic as later ones do. The language is any
        of the content's (a topic is the same in each). A node the content no longer has (a
        call from before a content change) leads nowhere: no topic.
        """
        any_language = next(iter(self.content.languages.values()))
        topic: str | None = None
        for node, digits in steps:
            try:
                screen = self.press(node, None if node == LANGUAGE else any_language, digits,
                                    0, topic)
            except UnknownNode:
                topic = None
                continue
            topic = screen.topic
        return topic

    def for_hidden_number(self, screen: Screen) -> Screen:
        """The screen for a caller whose number cannot be called back: before a recording,
        they hear that first (they may rather call again from an open number than speak for
        two minutes and learn it afterwards); other screens are as they are. The offer to
        record (after silence) loses its "a lawyer will help you": said right after "no
        lawyer can call you back", it contradicted it; the warning ends by inviting the
        question itself."""
        if screen.wait != "record":
            return screen
        kept = replace(screen, prompts=tuple(p for p in screen.prompts
                                             if p.key != "record.offer"))
        return _with_preface(kept, self.say(screen.language, "record.hidden_number"))

    def question_waits(self, language: str | None) -> Screen:
        """Goodbye to a caller whose question already waits for a lawyer, with that said
        first (in every language when theirs is not known): where silence would otherwise
        end in the offer to record the same question again."""
        return _with_preface(self.show(GOODBYE, language), self.say(language, "queue.waiting"))

    def recorded(self, language: str | None, number_known: bool = True) -> Screen:
        """Thank the caller and promise the callback (in every language when it is unknown).

        number_known False (a hidden or unusable caller ID: the question has no number to call
        back): no promise; the caller hears that the question is kept, that a lawyer cannot
        call a hidden number, and to call again from an open one.
        """
        if self.known_language(language):
            return self.show(DONE if number_known else DONE_NO_NUMBER, language)
        done = "record.done" if number_known else "record.done.no_number"
        # Every language's promise before any goodbye: a Russian speaker does not hear "Сау
        # болыңыз" (and hang up) before the promise in their own language.
        return Screen(GOODBYE, None, self.say(None, done) + self.say(None, "goodbye"), "hangup")

    def not_recorded(self, language: str | None, topic: str | None, tries: int = 0) -> Screen:
        """Tell the caller nothing was heard and offer to record again.

        A caller who never chose a language (silence on the language menu, or 0 there) hears it
        in both languages, and then the language menu once more: a key there goes on as
        usual (0 records again); silence says goodbye. tries is what the recording's offer
        carried: RECORDING_AGAIN (the offer made after silence on the "nothing was recorded"
        screen) says that nothing was saved, and goodbye, so a phone left off the hook is not
        offered to record forever.
        """
        if self.known_language(language) is None:
            if tries >= RECORDING_AGAIN:
                return _with_preface(self.show(GOODBYE, None), self.say(None, "record.not_heard"))
            screen = self.show(LANGUAGE, None, AFTER_EMPTY_RECORDING)
            return _with_preface(screen, self.say(None, "record.not_heard"))
        if tries >= RECORDING_AGAIN:
            return _with_preface(self.show(GOODBYE, language),
                                 self.say(language, "record.not_heard"))
        return self.show(EMPTY, language, topic=topic)

    def _press_language(self, key: str, tries: int, previous: str | None) -> Screen:
        """A key on the language menu; previous is the caller's language when they came here
        with 9: * goes back to its main menu, and silence to its offer to record."""
        code = self.content.languages.get(key)
        if code:
            screen = self.show(MAIN, code)
            return replace(screen, remember_language=code)
        if key == "0":
            return self.show(OFFER, previous)
        # Without a language to go back to, * and 9 show the language menu again: a waiting
        # caller's stays theirs (WAITING_CALLER).
        again = WAITING_CALLER if previous is None and tries >= WAITING_CALLER else 0
        if key == "*":
            return self.show(MAIN if previous else LANGUAGE, previous, 0 if previous else again)
        if key == "9":
            return self.show(LANGUAGE, previous, again)
        return self._repeat(LANGUAGE, previous, key, tries, None)

    def _repeat(
        self, node: str, language: str | None, key: str, tries: int, topic: str | None
    ) -> Screen:
        if node in (MAIN, LANGUAGE) and tries >= WAITING_CALLER:
            # A returning caller whose question waits (start): silence to the end says so
            # again, and goodbye; keys to the end, the offer to record (they may have another).
            if tries - WAITING_CALLER >= MAX_REPEATS:
                if not key:
                    return self.question_waits(language)
                return self.show(OFFER, language, 0, topic)
        elif node == LANGUAGE and tries >= AFTER_EMPTY_RECORDING:
            if not key:
                return self.show(GOODBYE, None)
            if tries - AFTER_EMPTY_RECORDING >= MAX_REPEATS:
                # Keys not on the menu, again and again: the offer to record, once more
                # (RECORDING_AGAIN: nothing heard a second time says goodbye).
                return self.show(OFFER, None, RECORDING_AGAIN)
            screen = self.show(LANGUAGE, None, tries + 1)
            return _with_preface(screen, self.say(None, "nav.wrong_key"))
        elif tries >= MAX_REPEATS:
            # After "nothing was recorded": the offer once more, as after any menu (a caller
            # who cannot use the keypad may still speak), but only once (RECORDING_AGAIN).
            again = RECORDING_AGAIN if node == EMPTY else 0
            return self.show(OFFER, language, again, topic)
        reason = "nav.wrong_key" if key else "nav.not_heard"
        screen = self.show(node, language, tries + 1, topic)
        return _with_preface(screen, self.say(language, reason))

    def _parent(self, node: str) -> str:
        if node in self.content.topics:
            return self.content.topics[node].parent
        for menu in self.content.menus.values():
            if node in menu.options.values():
                return menu.id
        return MAIN


def _with_preface(screen: Screen, preface: tuple[Prompt, ...]) -> Screen:
    return replace(screen, prompts=preface + screen.prompts)
