"""The phone tree: content validation and the menu engine, over every content file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from flows.content import (
    DEFAULT_CONTENT_DIR,
    MAX_EXPLAINER_WORDS,
    MAX_OPTIONS,
    PLACEHOLDERS,
    ContentError,
    Pronunciation,
    load_content,
)
from flows.engine import (
    GOODBYE,
    LANGUAGE,
    MAIN,
    MAX_REPEATS,
    OFFER,
    RECORD,
    RECORDING_AGAIN,
    Flow,
    UnknownNode,
)

CONTENT = load_content()
LANGUAGES = CONTENT.language_codes


@pytest.fixture
def flow() -> Flow:
    return Flow(CONTENT, callback_days=3)


@pytest.fixture
def content_copy(tmp_path: Path) -> Path:
    target = tmp_path / "content"
    shutil.copytree(DEFAULT_CONTENT_DIR, target)
    return target


def edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def problems_of(directory: Path) -> list[str]:
    with pytest.raises(ContentError) as info:
        load_content(directory)
    return info.value.problems


# -- the shipped content ---------------------------------------------------------------------

def test_shipped_content_speaks_kazakh_and_russian_with_four_real_topics() -> None:
    assert set(LANGUAGES) == {"kk", "ru"}
    assert set(CONTENT.topics) >= {"pension", "social_assistance", "disability", "documents"}
    assert "awaiting review" in CONTENT.status
    assert len(CONTENT.menus["main"].options) <= MAX_OPTIONS


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("topic", sorted(CONTENT.topics))
def test_every_explainer_is_fact_why_todo_and_short(language: str, topic: str) -> None:
    parts = [CONTENT.text(language, f"topic.{topic}.{p}") for p in ("fact", "why", "todo")]
    assert all(part.strip() for part in parts)
    assert sum(len(p.split()) for p in parts) <= MAX_EXPLAINER_WORDS
    # As said, too: the pronounce table's expansions are words the caller sits through.
    spoken = sum(len(CONTENT.spoken(language, p).split()) for p in parts)
    assert CONTENT.explainer_words(language, topic) == spoken <= MAX_EXPLAINER_WORDS


def test_an_explainer_too_long_as_spoken_is_refused(content_copy: Path) -> None:
    """Words a short form expands into count: ХҚКО is said as four."""
    def lengthen(data):  # type: ignore[no-untyped-def]
        extra = MAX_EXPLAINER_WORDS - load_content(content_copy).explainer_words("kk", "documents")
        data["prompts"]["topic.documents.why"] += " ХҚКО" * extra  # as written: just within
    edit(content_copy / "kk.yaml", lengthen)
    [problem] = problems_of(content_copy)
    assert problem.startswith("kk.yaml: prompts.topic.documents: explainer has ")
    assert "words as spoken" in problem


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_content_file_states_its_review_status(language: str) -> None:
    data = yaml.safe_load((DEFAULT_CONTENT_DIR / f"{language}.yaml").read_text("utf-8"))
    assert data["language"] == language
    assert "awaiting review" in data["status"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_prompt_renders_without_placeholders(flow: Flow, language: str) -> None:
    prompts = list(flow.all_prompts(language))
    assert len(prompts) == len(CONTENT.required_prompts())
    # Some SMS texts carry placeholders their sender fills (sms.callback_failed: the attempts
    # and the hotline's number; sms.question_recorded: the number); the flow fills {days}.
    by_sender = {key for key, names in PLACEHOLDERS.items() if set(names) - {"{days}"}}
    assert not [p.key for p in prompts if not p.text or ("{" in p.text and p.key not in by_sender)]
    assert not [p.key for p in prompts if "{days}" in p.text]


def test_callback_promise_says_the_number_as_a_word_in_each_language() -> None:
    flow = Flow(CONTENT, callback_days=3)
    assert "трёх рабочих дней" in flow.prompt("ru", "record.done").text
    assert "үш жұмыс күні" in flow.prompt("kk", "record.done").text


# -- validation names file and key -----------------------------------------------------------

def test_missing_translation_is_named(content_copy: Path) -> None:
    edit(content_copy / "kk.yaml", lambda d: d["prompts"].pop("topic.pension.why"))
    assert "kk.yaml: prompts.topic.pension.why: missing translation" in problems_of(content_copy)


def test_empty_prompt_is_named(content_copy: Path) -> None:
    edit(content_copy / "ru.yaml", lambda d: d["prompts"].update({"goodbye": "  "}))
    assert "ru.yaml: prompts.goodbye: empty prompt" in problems_of(content_copy)


def test_dangling_target_is_named(content_copy: Path) -> None:
    edit(content_copy / "tree.yaml",
         lambda d: d["menus"]["main"]["options"].update({"2": "housing"}))
    problems = problems_of(content_copy)
    assert "tree.yaml: menus.main.options.2: target 'housing' does not exist" in problems


def test_more_than_four_options_is_named(content_copy: Path) -> None:
    def add_two(data: dict) -> None:  # type: ignore[type-arg]
        data["menus"]["main"]["options"].update({"5": "pension", "6": "documents"})

    edit(content_copy / "tree.yaml", add_two)
    assert "tree.yaml: menus.main.options: 6 options, at most 4" in problems_of(content_copy)


def test_reserved_key_cannot_be_an_option(content_copy: Path) -> None:
    edit(content_copy / "tree.yaml",
         lambda d: d["menus"]["main"]["options"].update({"9": "pension"}))
    assert any("menus.main.options.9: key must be" in p for p in problems_of(content_copy))


def test_too_long_explainer_is_named(content_copy: Path) -> None:
    edit(content_copy / "ru.yaml",
         lambda d: d["prompts"].update({"topic.pension.why": "слово " * 90}))
    assert any(p.startswith("ru.yaml: prompts.topic.pension: explainer has")
               for p in problems_of(content_copy))


def test_promise_without_its_number_is_named(content_copy: Path) -> None:
    edit(content_copy / "kk.yaml", lambda d: d["prompts"].update({"record.done": "Рақмет."}))
    assert "kk.yaml: prompts.record.done: must contain {days}" in problems_of(content_copy)


# -- pronunciation: what the synthesiser says ----------------------------------------------

def test_written_forms_are_replaced_as_whole_words_longest_first_in_one_pass() -> None:
    said = Pronunciation((("ХҚКО", "орталық"), ("ХҚКО-ға", "орталыққа"), ("1414", "бір төрт"),
                          ("бір", "BIR")))
    assert said.spoken("ХҚКО-ға немесе ХҚКО, 1414 нөмірі") == (
        "орталыққа немесе орталық, бір төрт нөмірі")  # "бір" put in is not replaced again
    # Not inside a longer word or number, nor before an ending the table lacks.
    assert said.spoken("14145 ХҚКОлар бірақ ХҚКО-ның") == "14145 ХҚКОлар бірақ ХҚКО-ның"
    assert Pronunciation().spoken("1414") == "1414"


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_voice_says_the_number_digit_by_digit_but_the_text_keeps_it(
        flow: Flow, language: str) -> None:
    prompt = flow.prompt(language, "topic.documents.todo")
    assert "1414" in prompt.text
    assert "1414" not in prompt.speech
    digits = {"kk": "бір, төрт, бір, төрт", "ru": "один, четыре, один, четыре"}[language]
    assert digits in prompt.speech
    # The rendered file is named by what is said: a changed pronunciation renders again.
    plain = type(prompt)(prompt.language, prompt.key, prompt.text)
    assert prompt.audio_name != plain.audio_name


def test_kazakh_abbreviations_are_said_in_full_with_their_case_endings(flow: Flow) -> None:
    spoken = " ".join(flow.prompt("kk", key).speech for key in
                      ("topic.pension.fact", "topic.pension.todo", "topic.documents.fact",
                       "topic.documents.todo"))
    assert "ХҚКО" not in spoken and "БЖЗҚ" not in spoken
    assert "Халыққа қызмет көрсету орталығына немесе" in spoken  # ХҚКО-ға
    assert "Халыққа қызмет көрсету орталығындағы кезекті" in spoken  # ХҚКО-дағы
    # "the centre, that is ХҚКО" is not said as the same name twice.
    assert "Халыққа қызмет көрсету орталығы береді" in spoken
    # A prompt with nothing to change is said as written.
    assert flow.prompt("kk", "greeting").spoken == ""


def test_bad_pronunciation_entries_are_named(content_copy: Path) -> None:
    edit(content_copy / "kk.yaml", lambda d: d["pronounce"].update({"ХҚКО": ""}))
    assert "kk.yaml: pronounce.ХҚКО: needs a written and a spoken form" in problems_of(
        content_copy)
    edit(content_copy / "ru.yaml", lambda d: d.update({"pronounce": ["1414"]}))
    assert "ru.yaml: pronounce: must map written forms to spoken ones" in problems_of(
        content_copy)


def test_stale_entries_and_unlisted_endings_are_warnings_not_a_refusal(
        content_copy: Path) -> None:
    """An explainer edited by the lawyers must not stop the hotline: what the table no longer
    matches, or an ending it lacks, is a warning of `hotline flows check`."""
    def change(data: dict) -> None:  # type: ignore[type-arg]
        data["pronounce"]["БАҚ"] = "бұқаралық ақпарат құралдары"
        data["prompts"]["topic.disability.why"] += " ХҚКО-ның мекенжайын ауыл әкімінен сұраңыз."
    edit(content_copy / "kk.yaml", change)
    content = load_content(content_copy)
    assert "kk.yaml: pronounce.БАҚ: no spoken prompt contains it" in content.warnings
    assert ("kk.yaml: prompts.topic.disability.why: ХҚКО-ның: no pronounce entry for this "
            "ending") in content.warnings
    # Left as written rather than said as "орталығы-ның".
    spoken = Flow(content).prompt("kk", "topic.disability.why").speech
    assert "ХҚКО-ның" in spoken
    assert CONTENT.warnings == ()  # the shipped content is clean


def test_broken_yaml_is_named(content_copy: Path) -> None:
    (content_copy / "ru.yaml").write_text("prompts: [unclosed", encoding="utf-8")
    assert any(p.startswith("ru.yaml: not valid YAML") for p in problems_of(content_copy))


# -- the engine ------------------------------------------------------------------------------

def test_new_caller_hears_greeting_and_language_menu_in_both_languages(flow: Flow) -> None:
    screen = flow.start(None)
    assert screen.node == LANGUAGE and screen.wait == "key"
    assert [(p.language, p.key) for p in screen.prompts] == [
        ("kk", "greeting"), ("ru", "greeting"), ("kk", "language.choose"), ("ru", "language.choose")
    ]


@pytest.mark.parametrize("language", LANGUAGES)
def test_returning_caller_goes_straight_to_main_menu(flow: Flow, language: str) -> None:
    screen = flow.start(language)
    assert screen.node == MAIN and screen.language == language
    keys = [p.key for p in screen.prompts]
    assert keys[0] == "greeting" and "nav.lawyer" in keys and "nav.language" in keys


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_returning_caller_with_a_waiting_question_is_told_before_the_menu(
        flow: Flow, language: str) -> None:
    screen = flow.start(language, True)
    assert [p.key for p in screen.prompts[:2]] == ["greeting", "queue.waiting"]
    assert screen.node == MAIN and screen.prompts[2].key == "menu.main"
    assert "queue.waiting" not in [p.key for p in flow.start(language).prompts]
    # One who never chose a language (they left a question after silence on the language
    # menu) hears it in every language, each after its greeting, before the language menu.
    unknown = flow.start(None, True)
    assert unknown.node == LANGUAGE
    assert [(p.language, p.key) for p in unknown.prompts] == [
        *((code, key) for code in LANGUAGES for key in ("greeting", "queue.waiting")),
        *((code, "language.choose") for code in LANGUAGES)]


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_waiting_caller_who_only_listens_is_told_again_and_let_go(
        flow: Flow, language: str) -> None:
    """They called to ask after their question: silence through the menu's repeats ends with
    "your question is waiting" and goodbye, not the offer to record the same question again.
    Keys they press are heard as always; wrong ones to the end lead to the offer (they may
    want to ask something else), as does 0 at any time."""
    screen = flow.start(language, True)
    for _repeat in range(2):
        screen = flow.press(screen.node, language, "", screen.tries)
        assert screen.node == MAIN and screen.prompts[0].key == "nav.not_heard"
    last = flow.press(screen.node, language, "", screen.tries)
    assert last.node == GOODBYE and last.wait == "hangup"
    assert [p.key for p in last.prompts] == ["queue.waiting", "goodbye"]
    # Wrong keys: the offer, as for anyone.
    screen = flow.start(language, True)
    for key in ("7", "", "8"):
        screen = flow.press(screen.node, language, key, screen.tries)
    assert screen.node == OFFER
    # Without a waiting question: the offer after silence (the rule for everyone else).
    screen = flow.start(language)
    for _repeat in range(3):
        screen = flow.press(screen.node, language, "", screen.tries)
    assert screen.node == OFFER
    # A key chosen leads on as usual; 0 still reaches the recorder.
    assert flow.press(MAIN, language, "0", flow.start(language, True).tries).node == RECORD
    assert flow.press(MAIN, language, "1", flow.start(language, True).tries).node != MAIN
    # * on the main menu is the main menu again: still theirs, silence still lets them go.
    screen = flow.press(MAIN, language, "*", flow.start(language, True).tries)
    for _repeat in range(3):
        screen = flow.press(screen.node, language, "", screen.tries)
    assert screen.node == GOODBYE


@pytest.mark.parametrize("first_key", [None, "*", "9"])
def test_a_waiting_caller_without_a_language_who_only_listens_is_let_go(
        flow: Flow, first_key: str | None) -> None:
    """They left their question through silence on the language menu: calling to ask after
    it, silence there again ends with "your question is waiting" in every language, and
    goodbye, not the offer to record (* and 9 show that menu again, still theirs)."""
    screen = flow.start(None, True)
    assert screen.node == LANGUAGE
    if first_key:
        screen = flow.press(screen.node, None, first_key, screen.tries)
        assert screen.node == LANGUAGE
    for _repeat in range(2):
        screen = flow.press(screen.node, None, "", screen.tries)
        assert screen.node == LANGUAGE
        assert {p.key for p in screen.prompts[:len(LANGUAGES)]} == {"nav.not_heard"}
    last = flow.press(screen.node, None, "", screen.tries)
    assert last.node == GOODBYE and last.wait == "hangup"
    assert [(p.language, p.key) for p in last.prompts] == [
        *((code, "queue.waiting") for code in LANGUAGES),
        *((code, "goodbye") for code in LANGUAGES)]
    # Choosing a language there leads on as for anyone.
    assert flow.press(LANGUAGE, None, "2", flow.start(None, True).tries).node == MAIN


def test_choosing_a_language_remembers_it(flow: Flow) -> None:
    for key, code in CONTENT.languages.items():
        screen = flow.press(LANGUAGE, None, key)
        assert (screen.node, screen.language, screen.remember_language) == (MAIN, code, code)


@pytest.mark.parametrize("language", LANGUAGES)
def test_topic_explainer_then_its_own_menu(flow: Flow, language: str) -> None:
    for key, topic in CONTENT.menus["main"].options.items():
        screen = flow.press(MAIN, language, key)
        assert screen.node == topic and screen.topic == topic
        assert [p.key for p in screen.prompts] == [
            f"topic.{topic}.fact", f"topic.{topic}.why", f"topic.{topic}.todo", "explainer.menu"
        ]
        assert flow.press(topic, language, "1").prompts == screen.prompts  # hear again
        record = flow.press(topic, language, "2")  # ask a lawyer about this
        assert (record.node, record.wait, record.topic) == (RECORD, "record", topic)
        assert flow.press(topic, language, "0").node == MAIN
        assert flow.press(topic, language, "*").node == MAIN


def test_the_topic_after_a_calls_menu_steps_is_the_one_its_record_url_would_carry(
        flow: Flow) -> None:
    assert flow.topic_after([]) is None
    # Russian, pensions, "ask a lawyer about this".
    assert flow.topic_after([(LANGUAGE, "2"), (MAIN, "1"), ("pension", "2")]) == "pension"
    # Heard it again, silence twice (the offer to record keeps the explainer's topic).
    assert flow.topic_after([(MAIN, "1"), ("pension", "1"), ("pension", ""), ("pension", ""),
                             ("pension", "")]) == "pension"
    # Back to the main menu, another explainer, then 0: a lawyer, no topic.
    assert flow.topic_after([(MAIN, "1"), ("pension", "*"), (MAIN, "3"), ("disability", "0"),
                             (MAIN, "0")]) is None
    # A second question after the first one's promise: the second explainer's.
    assert flow.topic_after([(MAIN, "1"), ("pension", "2"), ("done", "0"), (MAIN, "4"),
                             ("documents", "2")]) == "documents"
    # Nothing heard on the recording, 1 to record again: still the explainer's.
    assert flow.topic_after([(MAIN, "2"), ("social_assistance", "2"),
                             ("empty", "1")]) == "social_assistance"
    # A node the content no longer has leads nowhere.
    assert flow.topic_after([(MAIN, "1"), ("old_topic", "2")]) is None


def test_global_keys(flow: Flow) -> None:
    assert flow.press(MAIN, "ru", "9").node == LANGUAGE
    assert flow.press("pension", "kk", "9").node == LANGUAGE
    lawyer = flow.press(MAIN, "ru", "0")
    assert (lawyer.node, lawyer.wait, lawyer.topic) == (RECORD, "record", None)
    assert flow.press(MAIN, "ru", "*").node == MAIN


@pytest.mark.parametrize("digits", ["", "7"])
def test_silence_or_wrong_key_repeats_twice_then_offers_to_record(flow: Flow, digits: str) -> None:
    reason = "nav.wrong_key" if digits else "nav.not_heard"
    first = flow.press(MAIN, "ru", digits, tries=0)
    assert (first.node, first.tries, first.prompts[0].key) == (MAIN, 1, reason)
    second = flow.press(MAIN, "ru", digits, tries=first.tries)
    assert (second.node, second.tries) == (MAIN, 2)
    third = flow.press(MAIN, "ru", digits, tries=second.tries)
    assert (third.node, third.wait) == (OFFER, "record")
    assert [p.key for p in third.prompts] == ["record.offer", "record.intro"]


def test_silence_on_explainer_repeats_only_its_menu(flow: Flow) -> None:
    screen = flow.press("pension", "kk", "", tries=0)
    assert [p.key for p in screen.prompts] == ["nav.not_heard", "explainer.menu"]


def test_silence_on_language_menu_ends_in_a_bilingual_offer(flow: Flow) -> None:
    screen = flow.press(LANGUAGE, None, "", tries=2)
    assert screen.node == OFFER and screen.language is None
    # Both offers first, then both "after the beep, speak", right before the beep.
    assert [(p.key, p.language) for p in screen.prompts] == [
        *(("record.offer", code) for code in LANGUAGES),
        *(("record.intro", code) for code in LANGUAGES)]


def test_after_recording_the_promise_then_goodbye(flow: Flow) -> None:
    done = flow.recorded("ru")
    assert [p.key for p in done.prompts] == ["record.done", "record.done.menu"]
    assert flow.press(done.node, "ru", "0").node == MAIN
    # The keys that mean the same everywhere mean it here too.
    assert flow.press(done.node, "ru", "*").node == MAIN
    assert flow.press(done.node, "ru", "9").node == LANGUAGE
    goodbye = flow.press(done.node, "ru", "")  # silence: the caller has heard the promise
    assert (goodbye.node, goodbye.wait) == (GOODBYE, "hangup")


@pytest.mark.parametrize("language", LANGUAGES)
def test_another_key_after_the_promise_says_so_and_repeats_it_then_goodbye(
        flow: Flow, language: str) -> None:
    """A caller who presses 1 after the promise (1 recorded again a screen earlier) is still
    listening: not hung up on, but told it is no key here and given the promise again."""
    done = flow.recorded(language)
    for tries in range(2):
        again = flow.press(done.node, language, "1", tries=tries)
        assert (again.node, again.wait, again.tries) == (done.node, "key", tries + 1)
        assert [p.key for p in again.prompts] == [
            "nav.wrong_key", "record.done", "record.done.menu"]
        assert {p.language for p in again.prompts} == {language}
    goodbye = flow.press(done.node, language, "#", tries=2)
    assert (goodbye.node, goodbye.wait) == (GOODBYE, "hangup")


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_main_menu_says_how_to_change_the_language_in_every_language(
        flow: Flow, language: str) -> None:
    """Someone in the other language's menu (the language remembered from a grandchild's SMS)
    hears in their own language that 9 changes it: last, after the menu's own words."""
    menu = flow.show(MAIN, language)
    others = [code for code in LANGUAGES if code != language]
    assert [(p.key, p.language) for p in menu.prompts[-len(others) - 2:]] == [
        ("nav.lawyer", language), ("nav.language", language),
        *(("nav.language", other) for other in others)]
    assert all(p.language == language for p in menu.prompts[:-len(others)])
    # Only the main menu: a topic's menu is for someone who found their way already.
    assert {p.language for p in flow.show("pension", language).prompts} == {language}


def test_nothing_recorded_offers_again_and_never_loops_forever(flow: Flow) -> None:
    empty = flow.not_recorded("kk", "pension")
    assert flow.press(empty.node, "kk", "1", topic="pension").node == RECORD
    # Silence there (twice repeated): one more offer to record, as after any menu, for a
    # caller who cannot use the keypad; it carries RECORDING_AGAIN to the recording's action...
    offer = flow.press(empty.node, "kk", "", tries=2, topic="pension")
    assert (offer.node, offer.wait, offer.tries, offer.topic) == (
        OFFER, "record", RECORDING_AGAIN, "pension")
    # ...so that a second empty recording says nothing was saved, and goodbye: no loop.
    goodbye = flow.not_recorded("kk", "pension", offer.tries)
    assert (goodbye.node, goodbye.wait) == (GOODBYE, "hangup")
    assert [p.key for p in goodbye.prompts] == ["record.not_heard", "goodbye"]
    # A wrong key three times is no different.
    assert flow.press(empty.node, "kk", "#", tries=2).tries == RECORDING_AGAIN


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_hidden_number_hears_no_promise_of_a_callback_on_any_repeat(
        flow: Flow, language: str) -> None:
    """After the question of a caller whose number is hidden was saved, a key that means
    nothing there repeats what they heard: that nobody can call them back, not the promise."""
    done = flow.recorded(language, number_known=False)
    assert [p.key for p in done.prompts] == ["record.done.no_number", "record.done.menu"]
    again = flow.press(done.node, language, "1")
    assert [p.key for p in again.prompts] == [
        "nav.wrong_key", "record.done.no_number", "record.done.menu"]
    assert again.node == done.node and again.tries == 1
    assert flow.press(done.node, language, "0").node == MAIN
    assert flow.press(done.node, language, "").node == GOODBYE


@pytest.mark.parametrize("number_known", [True, False])
def test_without_a_language_every_promise_comes_before_any_goodbye(
        flow: Flow, number_known: bool) -> None:
    """A caller who never chose a language hears what happens to the question in each
    language before any goodbye: a Russian speaker does not hear the Kazakh goodbye (and hang
    up) before their own promise."""
    done = flow.recorded(None, number_known)
    said = "record.done" if number_known else "record.done.no_number"
    assert (done.node, done.wait) == (GOODBYE, "hangup")
    assert [(p.language, p.key) for p in done.prompts] == [
        *((code, said) for code in LANGUAGES), *((code, "goodbye") for code in LANGUAGES)]


@pytest.mark.parametrize("language", [*LANGUAGES, None])
def test_a_hidden_numbers_offer_is_not_told_a_lawyer_will_help(
        flow: Flow, language: str | None) -> None:
    """Before the beep, a hidden number hears that no lawyer can call back; the offer's "a
    lawyer will help you" right after it contradicted that, and is left out. The recorder's
    own words stay, in each language after every warning."""
    codes = [language] if language else LANGUAGES
    offer = flow.for_hidden_number(flow.show(OFFER, language))
    assert offer.wait == "record"
    assert [(p.language, p.key) for p in offer.prompts] == [
        *((code, "record.hidden_number") for code in codes),
        *((code, "record.intro") for code in codes)]
    if language:  # 0 on the main menu: the recorder, with the warning first
        record = flow.for_hidden_number(flow.press(MAIN, language, "0"))
        assert [p.key for p in record.prompts] == ["record.hidden_number", "record.intro"]
    # An open number's offer keeps it.
    assert "record.offer" in [p.key for p in flow.show(OFFER, language).prompts]


@pytest.mark.parametrize("language", [*LANGUAGES, None])
def test_a_question_that_waits_is_said_before_goodbye(flow: Flow, language: str | None) -> None:
    codes = [language] if language else LANGUAGES
    screen = flow.question_waits(language)
    assert (screen.node, screen.wait) == (GOODBYE, "hangup")
    assert [(p.language, p.key) for p in screen.prompts] == [
        *((code, "queue.waiting") for code in codes), *((code, "goodbye") for code in codes)]


@pytest.mark.parametrize("language", LANGUAGES)
def test_nine_keeps_the_language_for_silence_and_back(flow: Flow, language: str) -> None:
    """A caller who pressed 9 (by mistake, or to hear what it does) is not treated as one who
    never chose: * goes back to their main menu, and silence ends in their offer to record,
    whose question then keeps their language."""
    menu = flow.press(MAIN, language, "9")
    assert (menu.node, menu.language) == (LANGUAGE, language)
    assert {p.language for p in menu.prompts} == set(LANGUAGES)  # the choice, in both
    assert flow.press(LANGUAGE, language, "*").node == MAIN
    assert flow.press(LANGUAGE, language, "*").language == language
    screen = menu
    for _ in range(3):
        screen = flow.press(LANGUAGE, screen.language, "", screen.tries)
    assert (screen.node, screen.language) == (OFFER, language)
    assert {p.language for p in screen.prompts} == {language}
    assert flow.press(LANGUAGE, language, "0").language == language
    other = next(code for key, code in CONTENT.languages.items() if code != language)
    key = next(key for key, code in CONTENT.languages.items() if code == other)
    chosen = flow.press(LANGUAGE, language, key)
    assert (chosen.node, chosen.language, chosen.remember_language) == (MAIN, other, other)


def test_nothing_recorded_without_a_language_is_said_and_never_a_bare_hang_up(
        flow: Flow) -> None:
    empty = flow.not_recorded(None, None)
    # Told in both languages that nothing was saved, then the language menu once more.
    assert empty.node == LANGUAGE and empty.wait == "key"
    assert [(p.language, p.key) for p in empty.prompts] == [
        *((code, "record.not_heard") for code in LANGUAGES),
        *((code, "language.choose") for code in LANGUAGES)]
    # A language goes on to the main menu, 0 offers the recording again...
    assert flow.press(LANGUAGE, None, "2", empty.tries).node == MAIN
    assert flow.press(LANGUAGE, None, "0", empty.tries).node == OFFER
    # ...a wrong key is explained and waits again; silence says goodbye, no endless loop.
    wrong = flow.press(LANGUAGE, None, "7", empty.tries)
    assert wrong.node == LANGUAGE and wrong.prompts[0].key == "nav.wrong_key"
    goodbye = flow.press(LANGUAGE, None, "", empty.tries)
    assert (goodbye.node, goodbye.wait) == (GOODBYE, "hangup")
    assert {p.language for p in goodbye.prompts} == set(LANGUAGES)
    # Wrong keys only: repeated twice, as any menu, then the offer to record once more; a
    # second empty recording then says so, and goodbye (not the language menu yet again).
    screens = [empty]
    while len(screens) < 10 and screens[-1].node == LANGUAGE:
        screens.append(flow.press(LANGUAGE, None, "7", screens[-1].tries))
    assert [screen.node for screen in screens] == [LANGUAGE] * (MAX_REPEATS + 1) + [OFFER]
    assert {p.language for p in screens[-1].prompts} == set(LANGUAGES)
    last = flow.not_recorded(None, None, screens[-1].tries)
    assert (last.node, last.wait) == (GOODBYE, "hangup")
    assert [p.key for p in last.prompts][:len(LANGUAGES)] == ["record.not_heard"] * len(LANGUAGES)


def test_every_screen_says_something_and_waits_for_something(flow: Flow) -> None:
    nodes = [LANGUAGE, *CONTENT.menus, *CONTENT.topics, RECORD, OFFER, "done", "empty", GOODBYE]
    for language in LANGUAGES:
        for node in nodes:
            screen = flow.show(node, language)
            assert screen.prompts and screen.wait in ("key", "record", "hangup")


def test_unknown_node_is_refused(flow: Flow) -> None:
    with pytest.raises(UnknownNode):
        flow.press("nowhere", "ru", "1")


def test_screens_are_remembered_but_not_unknown_nodes(
        flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Flow answers the same Screen object for the same question, never remembers a
    refusal, and stops remembering at MAX_REMEMBERED_SCREENS (it keeps answering)."""
    from flows import engine

    assert flow.start("ru") is flow.start("ru")
    assert flow.press(LANGUAGE, None, "2") is flow.press(LANGUAGE, None, "2")
    assert flow.show(MAIN, "kk") == Flow(flow.content).show(MAIN, "kk")
    for _ in range(2):
        with pytest.raises(UnknownNode):
            flow.press("no-such-node", "ru", "1")
    assert not any("no-such-node" in repr(key) for key in flow._screens)
    monkeypatch.setattr(engine, "MAX_REMEMBERED_SCREENS", len(flow._screens))
    assert flow.press(MAIN, "ru", "1", 0, "new-topic").node != ""
    assert len(flow._screens) == engine.MAX_REMEMBERED_SCREENS
