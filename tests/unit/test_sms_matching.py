"""SMS matching: language detection, transliteration, normalisation, the FAQ matcher on the test
set of residents' questions (tests/unit/sms_questions.yaml), and the SMS texts' lengths."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from flows.content import load_content
from flows.faq import FaqMatcher, Match
from flows.sms import SmsDialogue, SmsState, fallback_kind
from flows.sms_language import detect_language, normalise, skeleton, to_cyrillic

CONTENT = load_content()
LANGUAGES = CONTENT.language_codes
TOPICS = sorted(CONTENT.topics)
QUESTIONS = yaml.safe_load(
    (Path(__file__).parent / "sms_questions.yaml").read_text(encoding="utf-8")
)
SMS_PART = 67  # UCS-2 characters in one part of a split SMS
MAX_PARTS = 3


@pytest.fixture(scope="module")
def matcher() -> FaqMatcher:
    return FaqMatcher(CONTENT)


def answer(matcher: FaqMatcher, text: str, language: str) -> str:
    """The topic answered, or "none" when the message goes to a lawyer."""
    match = matcher.match(text, language)
    return match.topic if match is not None and match.confident else "none"


# -- language detection ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Сәлеметсіз бе, зейнетақым қашан келеді?", "kk"),
        ("мүгедектік тобы", "kk"),
        ("ХҚКО", "kk"),
        # Kazakh typed on a phone without Kazakh letters
        ("зейнетакы келмей жатыр не истеу керек", "kk"),
        ("калай алуга болады", "kk"),
        ("Уйимди сатып жиберди", "kk"),
        ("Апам кайтыс болды", "kk"),
        ("Немерем пенсиямды алып кетти", "kk"),
        ("Здравствуйте, когда придёт пенсия?", "ru"),
        ("инвалидность", "ru"),
        ("пенсия", "ru"),
        # Latin transliteration
        ("zeinetaqy qashan tusedi", "kk"),
        ("zeynetakym az kelip jatyr", "kk"),
        ("mugedektik toby qalai alady", "kk"),
        ("salem kerek komek", "kk"),
        ("Būryñğy otken zamanda", "kk"),
        ("pensiya kogda budet", "ru"),
        ("zdravstvuyte nuzhna pomosh", "ru"),
        ("invalidnost kak poluchit", "ru"),
        # In capitals: an I is no Kazakh letter for it ("PRISHLA" was read as "ПРІШЛА").
        ("MNE NE PRISHLA PENSIYA", "ru"),
        ("POMOGITE", "ru"),
        ("ZEINETAQY KELMEDI", "kk"),
        ("MENIN SURAGYM BAR", "kk"),
        # mixed: the language most of the words are in
        ("Сәлеметсіз бе, пенсия когда келеді", "kk"),
        ("Здравствуйте, у меня вопрос про ХҚКО", "ru"),
        ("Салем, подскажите когда пенсия", "ru"),
        ("пенcия", "ru"),  # a Latin c inside a Cyrillic word
    ],
)
def test_detect_language(text: str, expected: str) -> None:
    assert detect_language(text) == expected


@pytest.mark.parametrize(
    "text", ["", "   ", "1", "0", "1414", "😀👍🏽", "?!", "12 34 😀", "MENU", "OK",
             "OTKLUCHILI SVET", "PRIVET"]  # capitals with an I: no Kazakh letter in them
)
def test_detect_language_is_none_when_nothing_tells(text: str) -> None:
    assert detect_language(text) is None


# -- normalisation and transliteration -------------------------------------------------------

def test_normalise_lowercases_and_folds_yo() -> None:
    assert normalise("ЕЩЁ Пенсия") == "еще пенсия"


def test_normalise_strips_control_characters_emoji_and_punctuation() -> None:
    text = "Пенсия\x00\x07 когда\u200b?!\t\n😀👍🏽❤️ 1414, eGov.kz ХҚКО-ға"
    assert normalise(text) == "пенсия когда 1414 egov kz хқко ға"


def test_normalise_composes_and_keeps_kazakh_letters() -> None:
    decomposed = "\u0438\u0306"  # и + combining breve
    assert normalise(decomposed + "Әғқңөұүһі") == "йәғқңөұүһі"
    assert normalise("") == ""


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("pensiya kogda budet", "ru", "пенсия когда будет"),
        ("zdravstvuyte, shchuka khleb", "ru", "здравствуйте, щука хлеб"),
        ("invalidnost'", "ru", "инвалидность"),
        ("zeinetaqy qashan", "kk", "зеинетақы қашан"),
        ("Būryñğy bır danyşpan kısı", "kk", "Бұрыңғы бір данышпан кісі"),
        ("jeke kualik", "kk", "жеке куалик"),
        ("menin' sa'lem g'ana", "kk", "мениң сәлем ғана"),
        ("shyghu zhyl", "kk", "шығу жыл"),
        ("ASP", "kk", "АСП"),
        ("Пенсия когда?", "ru", "Пенсия когда?"),  # Cyrillic unchanged
        ("Зейнетақы 1414", "kk", "Зейнетақы 1414"),
        ("пенcия", "ru", "пенсия"),  # look-alike Latin c in a Cyrillic word
        ("potеryal pasport", "ru", "потерял паспорт"),  # a Cyrillic е in a Latin word
    ],
)
def test_to_cyrillic(text: str, language: str, expected: str) -> None:
    assert to_cyrillic(text, language) == expected


def test_skeleton_folds_kazakh_letters_and_spelling_variants() -> None:
    assert skeleton("зейнетақы") == skeleton("зейнетакы") == skeleton("зеинетакы")
    assert skeleton("мүгедек") == skeleton("мугедек")
    assert skeleton("помощь") == skeleton("помощ")
    assert skeleton("ЦОН".lower()) == skeleton("тсон")


# -- the test set ----------------------------------------------------------------------------

def test_the_test_set_is_big_enough() -> None:
    for language in LANGUAGES:
        items = QUESTIONS[language]
        assert len(items) >= 45
        assert sum(q["topic"] == "none" for q in items) >= 8
        assert {q["topic"] for q in items} == set(TOPICS) | {"none"}


@pytest.mark.parametrize("language", LANGUAGES)
def test_test_set_accuracy_and_no_confident_answers_to_other_problems(
    matcher: FaqMatcher, language: str
) -> None:
    items = QUESTIONS[language]
    outcomes = [(q["text"], q["topic"], answer(matcher, q["text"], language)) for q in items]
    accuracy = sum(label == got for _, label, got in outcomes) / len(outcomes)
    wrong_none = [text for text, label, got in outcomes if label == "none" and got != "none"]
    confident = [(label, got) for _, label, got in outcomes if got != "none"]
    precision = sum(label == got for label, got in confident) / len(confident)
    misses = "\n".join(f"  [{label} -> {got}] {text}" for text, label, got in outcomes
                       if label != got)
    summary = (f"{language}: top-1 accuracy {accuracy:.3f}, precision of confident answers "
               f"{precision:.3f}, {len(outcomes)} questions; misses:\n{misses}")
    assert accuracy >= 0.8, summary
    assert len(wrong_none) <= 1, summary
    assert precision >= 0.95, summary


# -- focused cases ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "language", "topic"),
    [
        # Kazakh suffixes on a keyword, and the к/г, қ/ғ alternation
        ("зейнетақымды қашан аламын", "kk", "pension"),
        ("зейнеткерлікке шыққым келеді", "kk", "pension"),
        ("жеке куәлігімді жоғалттым", "kk", "documents"),
        ("мүгедегім бар, жәрдемақы", "kk", "disability"),
        ("немеремді тіркелгім келеді", "kk", "documents"),
        # without Kazakh letters
        ("мугедектик тобы", "kk", "disability"),
        ("атаулы комек", "kk", "social_assistance"),
        # Russian inflections through the Snowball stemmer
        ("пособия по инвалидности", "ru", "disability"),
        ("инвалид", "ru", "disability"),
        ("удостоверения личности", "ru", "documents"),
        # Latin transliteration
        ("zeinetaqy qashan", "kk", "pension"),
        ("adresnaya pomosh", "ru", "social_assistance"),
        ("invalidnost", "ru", "disability"),
        ("pasport poteryal", "ru", "documents"),
        # typos
        ("пенсионый возраст", "ru", "pension"),
        ("инвалидносьть оформить", "ru", "disability"),
        ("зейнетакыммм", "kk", "pension"),
        # acronyms, with case endings
        ("в ЦОНе очередь", "ru", "documents"),
        ("МСЭК", "ru", "disability"),
        ("АӘК-ні тоқтатты", "kk", "social_assistance"),
        ("ХҚКО-ға барам", "kk", "documents"),
        # a Kazakh message with Russian words, a Russian one with Kazakh words
        ("пенсиям кешігіп келеді", "kk", "pension"),
        ("когда откроется ХҚКО", "ru", "documents"),
        # a topic answered even though the message names a channel (ЦОН, eGov) too
        ("подала на АСП через егов, ответа нет", "ru", "social_assistance"),
        ("пенсия по инвалидности", "ru", "disability"),
        # who the resident is, in one or two words, asks about the topic itself; with the
        # topic's own words it is still that topic
        ("я пенсионер", "ru", "pension"),
        ("мүгедекпін", "kk", "disability"),
        ("я пенсионерка хочу узнать про накопления в енпф", "ru", "pension"),
    ],
)
def test_focused_matches(matcher: FaqMatcher, text: str, language: str, topic: str) -> None:
    match = matcher.match(text, language)
    assert match is not None and match.topic == topic and match.confident, match


@pytest.mark.parametrize(("text", "language"), [
    ("Я инвалид, меня избивает сын", "ru"),
    ("Я пенсионерка, соседи угрожают", "ru"),
    ("Мен зейнеткермін, көмек керек", "kk"),
    ("Мүгедекпін, балам ренжітеді", "kk"),
    ("Пенсионер, отключили свет за долги", "ru"),
])
def test_who_the_resident_is_alone_is_no_confident_answer(matcher: FaqMatcher, text: str,
                                                         language: str) -> None:
    """In a message that says more, the resident saying who they are ("я пенсионер",
    "зейнеткермін", "мүгедекпін") counts half: alone it is below MIN_SCORE, and the message
    goes to a lawyer. A light, gas or water shut-off is another legal problem."""
    match = matcher.match(text, language)
    assert match is None or not match.confident, match


@pytest.mark.parametrize(("text", "language", "topic"), [
    # About others, or in another case: the topic itself.
    ("Какие выплаты положены инвалиду", "ru", "disability"),
    ("Выплаты инвалидам детства", "ru", "disability"),
    ("Мой сын инвалид какие выплаты положены", "ru", "disability"),
    ("Зейнеткерлерге қандай жәрдемақы бар", "kk", "pension"),
    # A pension or benefit "switched off" is the topic, not a utility shut-off.
    ("Отключили пенсию", "ru", "pension"),
    ("Отключили АСП", "ru", "social_assistance"),
    # Ordinary questions near the signs of another problem: no typo match ("взять" is not
    # "взятка"), no words far apart ("Простите ... деньги" is not "просят деньги"), no
    # short Kazakh stems ("тәртібі" is not "тартып").
    ("Как взять справку в ЦОНе", "ru", "documents"),
    ("Как забрать накопления из ЕНПФ", "ru", "pension"),
    ("Не приходит код смс для егов справка", "ru", "documents"),
    ("Как перевести пенсию на карту Каспи", "ru", "pension"),
    ("Как переоформить пособие по инвалидности на новый срок", "ru", "disability"),
    ("Зейнетақы тағайындау тәртібі қандай", "kk", "pension"),
    ("Алдағы айда зейнетақы көбейе ме", "kk", "pension"),
    ("Зейнетақы туралы шешім алдым, ақша қашан түседі", "kk", "pension"),
])
def test_the_topic_asked_about_others_or_switched_off_is_answered(
        matcher: FaqMatcher, text: str, language: str, topic: str) -> None:
    match = matcher.match(text, language)
    assert match is not None and match.topic == topic and match.confident, match


@pytest.mark.parametrize(
    ("text", "language"),
    [
        # other legal problems, even with a topic word inside
        ("с пенсии удерживают алименты", "ru"),
        ("зейнетақымнан алимент ұстап жатыр", "kk"),
        ("взял кредит под пенсию, не могу платить", "ru"),
        ("сосед забор поставил на мою землю", "ru"),
        ("көршім қоршау салды", "kk"),
        ("банктен несие алдым", "kk"),
        ("работодатель не платит зарплату", "ru"),
        # chit-chat, and words that only look like keywords
        ("спасибо", "ru"),
        ("рахмет", "kk"),
        ("ақ", "kk"),  # not АӘК
        ("аспан ашық", "kk"),  # not АСП
        ("группа крови для операции", "ru"),
        ("какие документы нужны", "ru"),
        # two topics equally: a lawyer sorts it out
        ("в ЦОНе не принимают документы на пенсию", "ru"),
    ],
)
def test_not_answered_confidently(matcher: FaqMatcher, text: str, language: str) -> None:
    match = matcher.match(text, language)
    assert match is None or not match.confident, match


def test_no_keyword_gives_none(matcher: FaqMatcher) -> None:
    assert matcher.match("как дела", "ru") is None
    assert matcher.match("😀", "kk") is None
    assert matcher.match("", "ru") is None


def test_match_is_a_frozen_value(matcher: FaqMatcher) -> None:
    match = matcher.match("пенсия", "ru")
    assert match == Match(topic="pension", score=1.0, confident=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        match.topic = "disability"  # type: ignore[misc]


def test_thresholds_can_be_tightened() -> None:
    strict = FaqMatcher(CONTENT, min_score=3.0)
    match = strict.match("пенсия", "ru")
    assert match is not None and match.topic == "pension" and not match.confident


# -- SMS texts -------------------------------------------------------------------------------

@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("topic", TOPICS)
def test_topic_answer_and_footer_fit_in_three_parts(language: str, topic: str) -> None:
    text = CONTENT.text(language, f"sms.topic.{topic}")
    footer = CONTENT.text(language, "sms.answer_footer")
    assert len(text) + 1 + len(footer) <= SMS_PART * MAX_PARTS, len(text) + 1 + len(footer)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(
    "key",
    ["sms.menu", "sms.help", "sms.stop", "sms.start", "sms.ask", "sms.question_received",
     "sms.more_hint", "sms.nothing_more", "sms.rate_limited", "sms.language_set"],
)
def test_sms_texts_fit_in_three_parts(language: str, key: str) -> None:
    text = CONTENT.text(language, key).replace("{days}", "10")
    assert 0 < len(text) <= SMS_PART * MAX_PARTS


@pytest.mark.parametrize("language", LANGUAGES)
def test_sms_texts_name_their_keywords(language: str) -> None:
    assert CONTENT.text(language, "sms.question_received").count("{days}") == 1
    assert "START" in CONTENT.text(language, "sms.stop")
    assert {"ru": "СТАРТ", "kk": "БАСТА"}[language] in CONTENT.text(language, "sms.stop")
    assert {"ru": "ЕЩЁ", "kk": "ТАҒЫ"}[language] in CONTENT.text(language, "sms.more_hint")
    assert {"ru": "МЕНЮ", "kk": "МӘЗІР"}[language] in CONTENT.text(language, "sms.help")
    assert "0" in CONTENT.text(language, "sms.answer_footer")
    menu = CONTENT.text(language, "sms.menu")
    assert all(f"{key} " in menu for key in ("1", "2", "3", "4", "0"))


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("topic", TOPICS)
def test_every_topic_has_8_to_25_keywords(language: str, topic: str) -> None:
    assert 8 <= len(CONTENT.keywords[language][topic]) <= 25


def test_matchers_of_equal_content_share_their_terms_and_changed_content_gets_its_own() -> None:
    """The terms are built once per content (create_app builds a matcher each time); a content
    with other keywords is matched by its own keywords, not the cached ones."""
    word = "жылқышы"  # no topic's word
    first, second = FaqMatcher(CONTENT), FaqMatcher(load_content())  # equal, not the same
    assert all(a is b for topic in TOPICS
               for a, b in zip(first._terms[topic], second._terms[topic], strict=True))
    assert second.match(word, "kk") is None
    topic = TOPICS[0]
    keywords = {language: dict(by_topic) for language, by_topic in CONTENT.keywords.items()}
    keywords["kk"][topic] = (*keywords["kk"].get(topic, ()), word)
    changed = dataclasses.replace(CONTENT, keywords=keywords)
    found = FaqMatcher(changed).match(word, "kk")
    assert found is not None and found.topic == topic
    assert FaqMatcher(CONTENT).match(word, "kk") is None  # the first content's terms again


def test_zero_passes_the_kazakh_message_the_explainer_answered() -> None:
    """The dialogue alone: the state carries the resident's words from the answer to 0, and
    through MORE; a message of two words is not carried."""
    dialogue = SmsDialogue(CONTENT)
    story = "Зейнетақыға қашан шығамын, құжаттар қандай керек?"
    answer = dialogue.reply(story, SmsState())
    assert (answer.kind, answer.state.last_topic, answer.state.answered_text) == (
        "topic", "pension", story)
    more = dialogue.reply("ТАҒЫ", dataclasses.replace(answer.state, more="..."))
    assert more.state.answered_text == story
    passed = dialogue.reply("0", more.state)
    assert (passed.kind, passed.question_text, passed.question_topic, passed.state.language) == (
        "question", story, "pension", "kk")
    assert passed.text == dialogue.text("kk", "sms.question_received")
    assert passed.state.answered_text is None
    short = dialogue.reply("зейнетақы жасы", SmsState(language="kk"))
    assert short.kind == "topic" and short.state.answered_text is None
    assert dialogue.reply("0", short.state).kind == "ask"


@pytest.mark.parametrize("zero", ["0", "О", "Ноль", "Нөл"])
def test_zero_in_any_form_is_nobodys_question_when_it_cannot_be_answered(zero: str) -> None:
    """Past the rate limit, opted out, or when answering failed, "Ноль" alone is a key, not a
    question to queue with that one word."""
    assert fallback_kind(zero, "ru") == "command"
    dialogue = SmsDialogue(CONTENT)
    assert dialogue.reply(zero, SmsState(language="ru", opted_out=True)).question_text is None


def test_a_russian_word_does_not_fold_onto_start() -> None:
    """"Начат" (begun) is not "НАЧАТЬ": Cyrillic folds only onto the Kazakh keywords."""
    reply = SmsDialogue(CONTENT).reply("Начат", SmsState(language="ru"))
    assert reply.kind == "question"
