"""Load and validate the phone tree and its prompts (YAML: one tree, one file per language)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONTENT_DIR = Path(__file__).parent / "content"

# Keys the engine gives a fixed meaning everywhere; a menu may not use them for options.
RESERVED_KEYS = frozenset({"0", "*", "9", "#"})
MAX_OPTIONS = 4
# Spoken slowly (about 110 words a minute) 80 words is roughly 45 seconds.
MAX_EXPLAINER_WORDS = 80
EXPLAINER_PARTS = ("fact", "why", "todo")

SYSTEM_PROMPTS = (
    "greeting",
    "language.choose",
    "nav.lawyer",
    "nav.language",
    "nav.main",
    "nav.not_heard",
    "nav.wrong_key",
    "explainer.menu",
    "record.offer",
    "record.intro",
    "record.done",
    "record.done.menu",
    "record.done.no_number",
    "record.hidden_number",
    "record.empty",
    "record.not_heard",
    "goodbye",
    "queue.waiting",
    "error.apology",
    "error.later",
    "sms.menu",
    "sms.help",
    "sms.stop",
    "sms.start",
    "sms.ask",
    "sms.question_received",
    "sms.answer_footer",
    "sms.more_hint",
    "sms.nothing_more",
    "sms.rate_limited",
    "sms.language_set",
    "sms.callback_failed",
    "sms.question_recorded",
)
# Prompts that must carry placeholders, filled in from the configuration (sms.callback_failed:
# how many times a lawyer tried to call back, and the hotline's number; sms.question_recorded:
# the receipt for a recorded question, with the number the lawyer will call from).
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "record.done": ("{days}",),
    "sms.question_received": ("{days}",),
    "sms.callback_failed": ("{attempts}", "{number}"),
    "sms.question_recorded": ("{days}", "{number}"),
}
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


class ContentError(Exception):
    """Content files that cannot drive a call; each problem names its file and key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Menu:
    """A keypad menu: its own id, and option key -> target node id."""

    id: str
    options: dict[str, str]


@dataclass(frozen=True)
class Topic:
    """A legal topic with a spoken explainer (fact, why it matters, what to do)."""

    id: str
    parent: str
    sources: tuple[str, ...]
    # In English (tree.yaml's `title:`), for the workspace and the public page in English,
    # which the phone's languages do not cover; the id, readable, when it has none.
    title: str = ""


@dataclass(frozen=True)
class Pronunciation:
    """Written forms a synthesiser says badly, and what it says instead (`pronounce:` in a
    language's file). Only the voice hears the spoken form: SMS, the screen of the built-in
    phone and the text a person reads in the studio keep the written one.

    A form is replaced as a whole word (not inside a longer word or number, nor before a
    hyphen: "ХҚКО-ның" is not "ХҚКО" with "-ның" left after the full name, which would be
    wrong; each ending is an entry of its own), the longest first, in one pass: what was put
    in is not replaced again.
    """

    table: tuple[tuple[str, str], ...] = ()

    @cached_property
    def _pattern(self) -> re.Pattern[str] | None:
        if not self.table:
            return None
        return _whole_words(sorted((w for w, _ in self.table), key=len, reverse=True))

    @cached_property
    def _said(self) -> dict[str, str]:
        return dict(self.table)

    def spoken(self, text: str) -> str:
        """The text as the synthesiser is to say it."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda match: self._said[match.group(0)], text)


def _whole_words(forms: list[str]) -> re.Pattern[str]:
    """Any of the forms as a whole word: not inside a longer word, nor before a hyphen."""
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, forms)) + r")(?![\w-])")


@dataclass(frozen=True)
class Content:
    """The whole validated phone tree with its prompts per language."""

    directory: Path
    status: str
    languages: dict[str, str]
    menus: dict[str, Menu]
    topics: dict[str, Topic]
    prompts: dict[str, dict[str, str]]
    # language -> topic -> words and phrases residents use for it (SMS matching)
    keywords: dict[str, dict[str, tuple[str, ...]]]
    # language -> how its synthesiser is to say some written forms
    pronounce: dict[str, Pronunciation] = field(default_factory=dict)
    # What `hotline flows check` reports without refusing the content (the hotline starts).
    warnings: tuple[str, ...] = ()

    @property
    def language_codes(self) -> tuple[str, ...]:
        """Languages in the order the language menu speaks them."""
        return tuple(self.languages.values())

    def text(self, language: str, key: str) -> str:
        """Return the prompt text of key in language."""
        return self.prompts[language][key]

    def explainer_words(self, language: str, topic: str) -> int:
        """How many words the topic's explainer says in language: as spoken, after its
        `pronounce:` expansions (ХҚКО is four words said, 1414 four), which is what the
        caller sits through."""
        return sum(len(self.spoken(language, self.prompts[language].get(
            f"topic.{topic}.{part}", "")).split()) for part in EXPLAINER_PARTS)

    def spoken(self, language: str, text: str) -> str:
        """Return text as the language's synthesiser is to say it (Pronunciation)."""
        pronunciation = self.pronounce.get(language)
        return pronunciation.spoken(text) if pronunciation else text

    def required_prompts(self) -> list[str]:
        """Every prompt key the tree and the engine need in each language."""
        keys = list(SYSTEM_PROMPTS)
        for menu in self.menus.values():
            keys.append(f"menu.{menu.id}")
            keys.extend(f"menu.{menu.id}.{key}" for key in menu.options)
        for topic in self.topics.values():
            keys.append(f"topic.{topic.id}.title")
            keys.extend(f"topic.{topic.id}.{part}" for part in EXPLAINER_PARTS)
            keys.append(f"sms.topic.{topic.id}")
        return keys


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{path.name}: file is missing")
        return {}
    except yaml.YAMLError as exc:
        problems.append(f"{path.name}: not valid YAML: {exc}")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path.name}: top level must be a mapping")
        return {}
    return data


def _parse_tree(
    tree: dict[str, Any], problems: list[str]
) -> tuple[dict[str, str], dict[str, Menu], dict[str, Topic]]:
    name = "tree.yaml"
    languages = {str(k): str(v) for k, v in (tree.get("languages") or {}).items()}
    if not languages:
        problems.append(f"{name}: languages: at least one language is needed")
    menus: dict[str, Menu] = {}
    for menu_id, body in (tree.get("menus") or {}).items():
        options = {str(k): str(v) for k, v in ((body or {}).get("options") or {}).items()}
        menus[str(menu_id)] = Menu(str(menu_id), options)
    if "main" not in menus:
        problems.append(f"{name}: menus.main: the main menu is missing")
    topic_ids = [str(t) for t in (tree.get("topics") or {})]
    overlap = set(topic_ids) & set(menus)
    if overlap:
        problems.append(f"{name}: topics.{sorted(overlap)[0]}: a topic and a menu share the id")

    parents: dict[str, str] = {}
    for menu in menus.values():
        where = f"{name}: menus.{menu.id}.options"
        if not menu.options:
            problems.append(f"{where}: a menu needs at least one option")
        if len(menu.options) > MAX_OPTIONS:
            problems.append(f"{where}: {len(menu.options)} options, at most {MAX_OPTIONS}")
        for key, target in menu.options.items():
            if key in RESERVED_KEYS or not re.fullmatch(r"[1-8]", key):
                problems.append(f"{where}.{key}: key must be one of 1-8 (0 * 9 # are reserved)")
            if target not in menus and target not in topic_ids:
                problems.append(f"{where}.{key}: target '{target}' does not exist")
            parents.setdefault(target, menu.id)

    topics: dict[str, Topic] = {}
    for topic_id, body in (tree.get("topics") or {}).items():
        body = body or {}
        topic_id = str(topic_id)
        if topic_id not in parents:
            problems.append(f"{name}: topics.{topic_id}: no menu leads to this topic")
        sources = tuple(str(s) for s in body.get("sources") or ())
        title = str(body.get("title") or topic_id.replace("_", " "))
        topics[topic_id] = Topic(topic_id, parents.get(topic_id, "main"), sources, title)
    for key, code in languages.items():
        if key in RESERVED_KEYS or not re.fullmatch(r"[1-8]", key):
            problems.append(f"{name}: languages.{key}: key must be one of 1-8")
        if not re.fullmatch(r"[a-z]{2}", code):
            problems.append(f"{name}: languages.{key}: '{code}' is not a two-letter code")
    return languages, menus, topics


def _check_prompts(content: Content, problems: list[str]) -> None:
    required = content.required_prompts()
    for code in content.language_codes:
        file = f"{code}.yaml"
        prompts = content.prompts.get(code, {})
        for key in required:
            text = prompts.get(key)
            if text is None:
                problems.append(f"{file}: prompts.{key}: missing translation")
            elif not text.strip():
                problems.append(f"{file}: prompts.{key}: empty prompt")
        for key in sorted(set(prompts) - set(required)):
            problems.append(f"{file}: prompts.{key}: not used by the tree (a typo?)")
        for key, text in prompts.items():
            wanted = PLACEHOLDERS.get(key, ())
            found = set(_PLACEHOLDER.findall(text))
            for placeholder in wanted:
                if placeholder not in found:
                    problems.append(f"{file}: prompts.{key}: must contain {placeholder}")
            unknown = found - set(wanted)
            if unknown:
                problems.append(f"{file}: prompts.{key}: unknown placeholder {sorted(unknown)[0]}")
        keywords = content.keywords.get(code, {})
        for topic in content.topics:
            if not keywords.get(topic):
                problems.append(f"{file}: keywords.{topic}: no keywords for SMS matching")
        for topic in sorted(set(keywords) - set(content.topics)):
            problems.append(f"{file}: keywords.{topic}: not a topic")
        for topic in content.topics:
            words = content.explainer_words(code, topic)
            if words > MAX_EXPLAINER_WORDS:
                problems.append(
                    f"{file}: prompts.topic.{topic}: explainer has {words} words as spoken "
                    f"(pronounce: expands a short form such as ХҚКО into its words), at most "
                    f"{MAX_EXPLAINER_WORDS} (about 45 s spoken slowly)"
                )


def _read_pronunciation(code: str, raw: object, prompts: dict[str, str],
                        problems: list[str], warnings: list[str]) -> Pronunciation:
    """The `pronounce:` mapping of a language's file: written form -> spoken form.

    A malformed entry is a problem. Warned about, without refusing the content (an explainer
    edited by the lawyers must not stop the hotline): a written form no spoken prompt
    contains (stale, or misspelt), and a form with an ending the table lacks ("ХҚКО-ның" where
    only "ХҚКО" and "ХҚКО-ға" are listed), which the synthesiser would garble."""
    if raw is None:
        return Pronunciation()
    if not isinstance(raw, dict):
        problems.append(f"{code}.yaml: pronounce: must map written forms to spoken ones")
        return Pronunciation()
    table = []
    voice = [text for key, text in prompts.items() if not key.startswith("sms.")]
    for raw_written, raw_said in raw.items():
        written = str(raw_written).strip()
        said = "" if raw_said is None or isinstance(raw_said, (dict, list)) else str(
            raw_said).strip()
        if not written or not said:
            problems.append(f"{code}.yaml: pronounce.{written}: needs a written and a spoken "
                            "form")
            continue
        pattern = _whole_words([written])
        if not any(pattern.search(text) for text in voice):
            warnings.append(f"{code}.yaml: pronounce.{written}: no spoken prompt contains it")
        table.append((written, said))
    pronunciation = Pronunciation(tuple(table))
    listed = {written for written, _ in table}
    for key, text in prompts.items():
        if key.startswith("sms."):
            continue
        for written in sorted(listed):
            for ending in re.findall(rf"(?<!\w){re.escape(written)}(-\w+)", text):
                if written + ending not in listed:
                    warnings.append(f"{code}.yaml: prompts.{key}: {written}{ending}: no "
                                    "pronounce entry for this ending")
    return pronunciation


def load_content(directory: Path | None = None) -> Content:
    """Read and validate every content file; raise ContentError listing all problems."""
    directory = directory or DEFAULT_CONTENT_DIR
    problems: list[str] = []
    tree = _read_yaml(directory / "tree.yaml", problems)
    languages, menus, topics = _parse_tree(tree, problems)
    prompts: dict[str, dict[str, str]] = {}
    keywords: dict[str, dict[str, tuple[str, ...]]] = {}
    pronounce: dict[str, Pronunciation] = {}
    warnings: list[str] = []
    for code in languages.values():
        data = _read_yaml(directory / f"{code}.yaml", problems)
        if data and data.get("language") != code:
            problems.append(f"{code}.yaml: language: must be '{code}'")
        raw = data.get("prompts") or {}
        if not isinstance(raw, dict):
            problems.append(f"{code}.yaml: prompts: must be a mapping")
            raw = {}
        prompts[code] = {
            str(k): ("" if v is None else str(v)) if not isinstance(v, (dict, list)) else ""
            for k, v in raw.items()
        }
        raw_keywords = data.get("keywords") or {}
        if not isinstance(raw_keywords, dict):
            problems.append(f"{code}.yaml: keywords: must map topics to lists of words")
            raw_keywords = {}
        keywords[code] = {
            str(topic): tuple(str(w).strip() for w in (words or []) if str(w).strip())
            if isinstance(words, list) else ()
            for topic, words in raw_keywords.items()
        }
        pronounce[code] = _read_pronunciation(code, data.get("pronounce"), prompts[code],
                                              problems, warnings)
    content = Content(
        directory=directory,
        status=str(tree.get("status", "")),
        languages=languages,
        menus=menus,
        topics=topics,
        prompts=prompts,
        keywords=keywords,
        pronounce=pronounce,
        warnings=tuple(warnings),
    )
    _check_prompts(content, problems)
    if problems:
        raise ContentError(problems)
    return content
