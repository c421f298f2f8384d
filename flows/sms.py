"""The SMS dialogue: given a resident's message and what we remember of them, what to answer.

Pure logic over the same content as the phone tree (one source of truth): no Flask, no Twilio,
no database. The web layer applies the returned effects and sends `SmsReply.text`.

Decisions: the language of a free-text message (detected) wins and is remembered, when it is
clearly the other language than the remembered one (sms_language.keeps_language); a bare
keyword keeps the remembered language; with nothing to go on the reply is in the content's first
language (Kazakh). Keywords are matched on the whole message
(case, spaces and punctuation ignored) in Kazakh, Russian and English, and the Kazakh and
Russian ones also typed in Latin letters, as on a phone without a Cyrillic keyboard or in the
Kazakh Latin alphabet ("KOMEK", "toqta", "vopros", "menyu"). A number of one or two digits that
is no menu key gets the menu again (it is a mistyped key, not a question for a lawyer). Free
text that matches a topic confidently gets that topic's answer plus "reply 0 to ask a lawyer";
anything else goes to the consultants' queue as a question.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace

from flows.content import Content
from flows.faq import FaqMatcher
from flows.segments import MAX_PARTS, fits, split_to_fit
from flows.sms_language import (
    detect_language,
    is_latin_word,
    keeps_language,
    skeleton,
    to_cyrillic,
)


# Twilio's own opt-out words, plus Kazakh and Russian ones.
def is_opt_keyword(body: str) -> bool:
    """Tell whether the message is STOP or START in any language (never rate-limited)."""
    word = command_word(clean_text(body))
    return word in STOP_WORDS or word in START_WORDS


STOP_WORDS = frozenset({
    "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
    "СТОП", "ОТПИСАТЬСЯ", "ОТПИСКА", "ХВАТИТ", "ПРЕКРАТИТЕ", "ПРЕКРАТИТЬ", "ОТМЕНА",
    # Several words are one keyword (keyword() drops the spaces): "не пишите мне больше".
    "НЕПИШИТЕ", "НЕПИШИТЕМНЕ", "НЕПИШИТЕБОЛЬШЕ", "НЕПИШИТЕМНЕБОЛЬШЕ", "БОЛЬШЕНЕПИШИТЕ",
    # Not "Отпишите(сь)": in everyday Russian "отпишитесь мне" is "write back to me".
    "НЕПРИСЫЛАЙТЕ", "ОТПИШИТЕМЕНЯ", "УДАЛИТЕМОЙНОМЕР", "УДАЛИТЕНОМЕР", "ХВАТИТПИСАТЬ",
    "ХВАТИТМНЕПИСАТЬ",
    # Kazakh: the bare form, and the polite ones an older resident writes.
    "ТОҚТА", "ТОКТА", "ТОҚТАТ", "ТОКТАТ", "ТОҚТАТЫҢЫЗ", "ТОКТАТЫНЫЗ", "ЖІБЕРМЕҢІЗ",
    "ЖИБЕРМЕНИЗ", "ЖІБЕРМЕҢІЗШІ", "ЖИБЕРМЕНИЗШИ", "ЖАЗБАҢЫЗ", "ЖАЗБАНЫЗ", "ЖАЗБАҢЫЗШЫ",
    "ЖАЗБАНЫЗШЫ", "ТОҚТАТЫҢЫЗШЫ", "ТОКТАТЫНЫЗШЫ", "ЖІБЕРМЕҢДЕР", "ЖИБЕРМЕНДЕР", "ЖАЗБАҢДАР",
    "ТОҚТАҢЫЗ", "ТОКТАНЫЗ", "ТОҚТАҢЫЗШЫ", "ТОКТАНЫЗШЫ",
    "ЖАЗБАНДАР", "НӨМІРІМДІӨШІРІҢІЗ", "НОМИРИМДИОШИРИНИЗ", "МЕНІТІЗІМНЕНӨШІРІҢІЗ",
    "МЕНИТИЗИМНЕНОШИРИНИЗ", "СМСКЕРЕКЕМЕС", "ХАБАРЛАМАКЕРЕКЕМЕС",
    # More Russian ways: "Не отправляйте мне смс", "Перестаньте писать", "Не надо мне писать",
    # "Не беспокойте меня", "Мне не нужны ваши смс"; a wrong number or no subscription.
    # (Not "не писать" or "не надо писать" alone: "Мне не писать", "Уже не надо писать".)
    "НЕОТПРАВЛЯЙТЕ", "ПЕРЕСТАНЬТЕ", "НЕНАДОМНЕПИСАТЬ", "ПРОШУНЕПИСАТЬ", "ПРОШУБОЛЬШЕНЕПИСАТЬ",
    "НЕНАДОПРИСЫЛАТЬ",
    "НЕБЕСПОКОЙТЕ", "СМСНЕНАДО", "НЕНУЖНЫВАШИСМС", "НЕНУЖНЫСМС", "ЭТОНЕМОЙНОМЕР",
    "ВЫОШИБЛИСЬНОМЕРОМ", "ЯНЕПОДПИСЫВАЛСЯ", "ЯНЕПОДПИСЫВАЛАСЬ",
    # "Больше не надо писать"; the informal Kazakh "don't write/send" (ЖАЗБА alone only: it is
    # also the noun "a note"); СТОП typed all in Latin look-alikes.
    "БОЛЬШЕНЕНАДОПИСАТЬ", "ЖАЗБА", "ЖІБЕРМЕ", "ЖИБЕРМЕ", "CTOP"})
# Words that may stand beside stop keywords in a message that only asks to stop: "Больше не
# присылайте мне СМС", "Маған хабарлама жібермеңіз", "Стоп! Не пишите". Every word must be
# one of these, a polite word or part of a stop keyword (stop_word); one other word and the
# message is read as anything else is ("Стоп, пенсия не пришла" asks a question).
STOP_COMPANIONS = frozenset({
    "МНЕ", "МЕНЯ", "НАМ", "НАС", "БОЛЬШЕ", "НИКОГДА", "СЮДА", "ПИСАТЬ", "ПРИСЫЛАТЬ", "СЛАТЬ",
    "СМС", "SMS", "СООБЩЕНИЯ", "СООБЩЕНИЙ", "РАССЫЛКА", "РАССЫЛКУ", "РАССЫЛКИ", "СПАМ", "ИЗ",
    "ОТ", "БАЗЫ", "ВСЁ", "ВСЕ", "УЖЕ", "ПРОШУ", "НЕНАДО", "НИЧЕГО", "СПАСИБО", "МАҒАН",
    "МАГАН",
    "ЕНДІ", "ЕНДИ", "ХАБАРЛАМА", "ХАБАРЛАМАЛАР", "ХАБАРЛАМАНЫ", "БАСҚА", "БАСКА", "РАХМЕТ",
    "КЕРЕКЕМЕС"})  # "Маған керек емес, жазбаңыз"
# Beside a whole-message stop word only these may stand: "Всё, хватит", "Хватит уже".
WEAK_STOP_COMPANIONS = frozenset({"ВСЁ", "ВСЕ", "УЖЕ"})
# Stop words that mean stop only as the whole message: with companions they may mean other
# things ("Мне хватит", "Мне отмена", "the END of my pension").
WHOLE_MESSAGE_STOP_WORDS = frozenset({
    "CANCEL", "END", "QUIT", "REVOKE", "ХВАТИТ", "ПРЕКРАТИТЬ", "ОТМЕНА"})
# And these stop only alone, with nothing at all beside them: "Уже отписка" is a complaint
# about a brush-off answer.
ALONE_STOP_WORDS = frozenset({"ОТПИСКА", "ЖАЗБА"})
# Stop keywords of several words, written as several words (keyword() joins them).
_MAX_STOP_WORDS = 4
START_WORDS = frozenset({"START", "UNSTOP", "СТАРТ", "БАСТА", "НАЧАТЬ",
                         # The stop reply's own words, as a resident writes them back:
                         # "чтобы начать снова…", "қайта бастау үшін…".
                         "НАЧАТЬСНОВА", "СТАРТСНОВА", "СНОВАСТАРТ", "БАСТАУ", "ҚАЙТАБАСТАУ",
                         "КАЙТАБАСТАУ", "ҚАЙТАБАСТА", "КАЙТАБАСТА"})
# "БАСТА" is "start" in Kazakh but "enough!" in Russian: from a resident whose language is
# Russian it is a STOP (a wish to stop must never be read as its opposite).
_STOP_IN = {"БАСТА": frozenset({"ru"})}
# Not "СПРАВКА": to a resident it is a certificate (the documents topic), not a help text.
HELP_WORDS = frozenset({"HELP", "INFO", "ПОМОЩЬ", "КӨМЕК", "КОМЕК"})
MENU_WORDS = frozenset({"MENU", "МЕНЮ", "МӘЗІР", "МАЗИР", "МАЗІР", "?", "0?"})
MORE_WORDS = frozenset({"MORE", "ЕЩЁ", "ЕЩЕ", "ДАЛЕЕ", "ТАҒЫ", "ТАГЫ"})
QUESTION_WORDS = frozenset({"СҰРАҚ", "СУРАК", "ВОПРОС", "Q", "QUESTION", "СҰРАҚБАР",
                            "СУРАКБАР", "СҰРАҒЫМБАР", "СУРАГЫМБАР", "МЕНІҢСҰРАҒЫМБАР",
                            "МЕНИНСУРАГЫМБАР", "ЕСТЬВОПРОС", "УМЕНЯВОПРОС",
                            "УМЕНЯЕСТЬВОПРОС", "ХОЧУСПРОСИТЬ", "МОЖНОВОПРОС",
                            # "I want to ask", before the question itself: asked to write it,
                            # the next message is the question (not an empty one queued, and
                            # the real one answered with a topic's text).
                            "ВОПРОСЕСТЬ", "ХОЧУЗАДАТЬВОПРОС", "МОЖНОЗАДАТЬВОПРОС",
                            "ЕСТЬВОПРОСКЮРИСТУ", "УМЕНЯВОПРОСКЮРИСТУ", "ВОПРОСКЮРИСТУ",
                            "УМЕНЯЕСТЬВОПРОСКЮРИСТУ", "ХОЧУЗАДАТЬВОПРОСЮРИСТУ",
                            "ХОЧУСПРОСИТЬЮРИСТА", "МЕНДЕСҰРАҚБАР", "МЕНДЕСУРАКБАР",
                            "СҰРАҒЫМБАРЕДІ", "СУРАГЫМБАРЕДИ", "СІЗГЕСҰРАҒЫМБАР",
                            "СИЗГЕСУРАГЫМБАР", "ЗАҢГЕРГЕСҰРАҒЫМБАР", "ЗАНГЕРГЕСУРАГЫМБАР",
                            "СҰРАҚҚОЙҒЫМКЕЛЕДІ", "СУРАККОЙГЫМКЕЛЕДИ"})
# A greeting is how many residents open a conversation: it gets the menu, not a lawyer.
GREETING_WORDS = frozenset({
    "СӘЛЕМ", "САЛЕМ", "СӘЛЕМЕТСІЗБЕ", "САЛЕМЕТСИЗБЕ", "АССАЛАУМАҒАЛЕЙКУМ", "АССАЛАУМАГАЛЕЙКУМ",
    "САЛАМ", "АССАЛАМУАЛЕЙКУМ", "АССАЛАУМАЛЕЙКУМ", "САЛАМАЛЕЙКУМ", "АССАЛАМАЛЕЙКУМ",
    "САЛЕМАЛЕЙКУМ",
    "ҚАЙЫРЛЫКҮН", "КАЙЫРЛЫКУН", "ЗДРАВСТВУЙТЕ", "ЗДРАСТЕ", "ЗДРАСЬТЕ", "ЗДРАСТЬТЕ",
    "ЗДРАВСТВУЙ", "ПРИВЕТ", "ДОБРЫЙДЕНЬ", "ДОБРЫЙВЕЧЕР", "ДОБРОЕУТРО", "АЛЛО", "HELLO", "HI"})
_MAX_GREETING_WORDS = 3  # "Добрый день", "Сәлеметсіз бе", "Ассалаумағалейкум" in pieces
# Thanks and "OK" after an answer end the conversation: no reply, and nobody's question.
THANKS_WORDS = frozenset({
    "РАХМЕТ", "РАҚМЕТ", "КӨПРАХМЕТ", "КОПРАХМЕТ", "СПАСИБО", "СПС", "БОЛЬШОЕСПАСИБО",
    "THANKS", "THANKYOU", "OK", "ОК", "ОКЕЙ", "ХОРОШО", "ПОНЯТНО", "ЖАҚСЫ", "ЖАКСЫ",
    "ТҮСІНІКТІ", "ТУСИНИКТИ", "БЛАГОДАРЮ", "БЛАГОДАРИМ",
    # A goodbye ends the conversation as a thanks does.
    "ДОСВИДАНИЯ", "САУБОЛЫҢЫЗ", "САУБОЛЫНЫЗ", "САУБОЛ"})
# Words that may stand beside a thanks in a reply that asks nothing: "Спасибо большое",
# "Көп рахмет сізге". Every word of such a reply must be a thanks, one of these or a polite
# word, and it must not ask: "Спасибо, пенсия не пришла" is a question and goes to the lawyers.
THANKS_COMPANIONS = frozenset({
    "БОЛЬШОЕ", "ОГРОМНОЕ", "ВАМ", "ВАС", "ВАШЕГО", "Я", "МЫ", "ЛАДНО", "ДА", "ПОНЯЛ",
    "ПОНЯЛА", "ПРИНЯТО", "ЯСНО", "ВСЁ", "ВСЕ", "СІЗГЕ", "СИЗГЕ", "КӨП", "КОП", "ҮЛКЕН",
    "УЛКЕН", "ИӘ", "ИА", "ТҮСІНДІМ", "ТУСИНДИМ", "ЖАРАЙДЫ", "АЙНАЛАЙЫН", "БАЛАМ",
    # "Спасибо, до свидания", "Спасибо за помощь", "Рахмет, сау болыңыз".
    "ДО", "СВИДАНИЯ", "САУ", "БОЛЫҢЫЗ", "БОЛЫНЫЗ", "ЗА", "ПОМОЩЬ",
    "КӨМЕГІҢІЗГЕ", "КОМЕГИНИЗГЕ", "КӨМЕКТЕРІҢІЗГЕ", "КОМЕКТЕРИНИЗГЕ"})
# "No" before a thanks declines ("Нет, спасибо", "Жоқ, рахмет": to "0 for a lawyer"); after it,
# it may say what is missing ("Спасибо, нет", "Рахмет жоқ": still no pension), a question.
DECLINE_WORDS = frozenset({"НЕТ", "ЖОҚ", "ЖОК"})
# "I'll wait for the call": a thanks only from a resident whose question is open (the answer to
# the receipt SMS). After the SMS that says we could not reach them, the same words ask for
# another call, and go to the lawyers as a question.
# Without a thanks, a reply of these words says it too when it has one of WAITING_VERBS:
# "Жду звонка", "Буду ждать", "Күтемін".
WAITING_VERBS = frozenset({
    "ЖДУ", "ЖДЁМ", "ЖДЕМ", "ЖДАТЬ", "ПОДОЖДУ", "ДОЖДУСЬ", "КҮТЕМІН", "КУТЕМИН", "КҮТЕМІЗ",
    "КУТЕМИЗ", "КҮТЕЙІН", "КУТЕЙИН"})
WAITING_WORDS = WAITING_VERBS | frozenset({
    "БУДУ", "ЗВОНКА", "ЗВОНОК", "ОТВЕТА", "ВАШЕГО", "ҚОҢЫРАУДЫ", "КОНЫРАУДЫ", "ЖАУАПТЫ",
    "ҚОҢЫРАУЫҢЫЗДЫ", "КОНЫРАУЫНЫЗДЫ", "ЖАУАБЫҢЫЗДЫ", "ЖАУАБЫНЫЗДЫ"})
WAITING_COMPANIONS = frozenset({"Я", "МЫ", "БУДЕМ", "МЕН", "БІЗ", "БИЗ"})  # and POLITE_WORDS
MAX_THANKS_WORDS = 5
_WORD_SEPARATORS = re.compile(r"[\s.,!;:'\"()\-_*#…–—]+")
LANGUAGE_WORDS = {"KZ": "kk", "KK": "kk", "ҚАЗ": "kk", "КАЗ": "kk", "QAZ": "kk", "ҚАЗАҚША": "kk",
                  "RU": "ru", "РУС": "ru", "РУ": "ru", "ОРЫСША": "ru", "ПОРУССКИ": "ru",
                  # Asked for in a sentence: "Орысша жазыңыз", "На казахском", "Казахский".
                  "ҚАЗАҚШАЖАЗЫҢЫЗ": "kk", "ОРЫСШАЖАЗЫҢЫЗ": "ru", "КАЗАХСКИЙ": "kk", "РУССКИЙ": "ru",
                  "ПОКАЗАХСКИ": "kk", "НАКАЗАХСКОМ": "kk", "НАРУССКОМ": "ru",
                  "ПИШИТЕПОКАЗАХСКИ": "kk", "ПИШИТЕПОРУССКИ": "ru", "ПИШИТЕНАКАЗАХСКОМ": "kk",
                  "ПИШИТЕНАРУССКОМ": "ru"}
ASK_LAWYER = "0"
# Typed for 0: the letter О (Cyrillic or Latin, next to 0 on many keypads) or the word.
ASK_LAWYER_WORDS = frozenset({ASK_LAWYER, "О", "O", "НОЛЬ", "НӨЛ", "НОЛ"})
# A message answered with a topic's explainer that has at least this many words is passed to a
# lawyer as it is when the resident replies 0 (SmsState.answered_text); a shorter one ("пенсия")
# says too little, and the resident is asked to write the question.
MIN_PASSED_WORDS = 3
# Words that make a keyword polite without changing it: "Стоп, пожалуйста", "STOP please".
POLITE_WORDS = frozenset({"ПОЖАЛУЙСТА", "ПОЖАЛУЙСТО", "ПЖЛ", "ПЛИЗ", "PLEASE", "PLS", "PLZ",
                          "ӨТІНЕМІН", "ОТИНЕМИН", "ӨТІНІШ", "ОТИНИШ", "ӨТІНЕМ", "ОТИНЕМ",
                          # As typed: "Стоп пожалуста", "Стоп пж"; in Latin letters
                          # ("Stop pozhaluista", "Toqta otinemin") they fold onto these.
                          "ПОЖАЛУСТА", "ПОЖАЛУСТО", "ПОЖАЛУЙСТ", "ПОЖАЛСТА", "ПЖ", "ПЖЛСТ"})
# Latin letters that look like Cyrillic ones, in a word that mixes the two ("CTOП").
_LOOKALIKES = str.maketrans("ABCEHIKMOPTXY", "АВСЕНІКМОРТХУ")  # I: Kazakh І
_KEYWORDS = (STOP_WORDS | START_WORDS | HELP_WORDS | MENU_WORDS | MORE_WORDS | QUESTION_WORDS
             | GREETING_WORDS | THANKS_WORDS | frozenset(LANGUAGE_WORDS))
# The Cyrillic keywords folded as skeleton folds them, each to itself: "КОМЕК" and "КӨМЕК"
# fold alike, so a Latin "KOMEK" written back in Cyrillic finds either.
# Stop companions and polite words too ("Magan sms jibermeniz", "otinemin"); a keyword wins
# over a companion folded alike.
_FOLDED_KEYWORDS = {skeleton(word.lower()): word
                    for words in (POLITE_WORDS, STOP_COMPANIONS, _KEYWORDS)
                    for word in sorted(words) if not word.isascii()}
# Cyrillic words fold only onto the Kazakh keywords and companions (a phone without some
# Kazakh letters: "ЖIБЕРМЕНИЗ", "Нөмірімді өшірініз"); a Russian word folding onto a Russian
# keyword would be another word ("Не беспокоите", "Начат").
_FOLDED_KAZAKH = {skeleton(word.lower()): word
                  for words in (STOP_COMPANIONS, _KEYWORDS) for word in sorted(words)
                  if any(ch in "ӘҒҚҢӨҰҮҺІ" for ch in word)}
# Keywords only Kazakh has: written with Kazakh letters, or folding as one that is
# ("ЖИБЕРМЕНИЗ" for "ЖІБЕРМЕҢІЗ"). A message of one is Kazakh (SmsDialogue.detected_language).
KAZAKH_KEYWORDS = frozenset(word for word in _KEYWORDS | STOP_COMPANIONS
                            if skeleton(word.lower()) in _FOLDED_KAZAKH)
_LONGEST_LATIN_KEYWORD = 16  # "OTPISATSYA" has 10 letters; longer text is no keyword
_NOT_A_KEYWORD_CHAR = re.compile(r"[\s.,!;:'\"()\-_*#…–—]+")
# Around a keyword: a question mark, quotes ("Меню?", «Стоп»).
_ASKED_OR_QUOTED = re.compile(r"[?«»„“”]+")
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_LATIN = re.compile("[A-Z]")


@dataclass(frozen=True)
class SmsState:
    """What we remember of a number between messages."""

    language: str | None = None
    opted_out: bool = False
    last_topic: str | None = None
    more: str | None = None
    awaiting_question: bool = False
    # A question of theirs waits for a lawyer (read by the web layer, not kept): "жду звонка"
    # is then a thanks (is_short_thanks).
    question_open: bool = False
    # The resident's own words that the last topic answer replied to (MIN_PASSED_WORDS or
    # more): "0" then passes them to a lawyer, so that nobody types a long message twice.
    answered_text: str | None = None


@dataclass(frozen=True)
class SmsReply:
    """The answer to one message, and what to remember afterwards."""

    text: str | None
    state: SmsState
    question_text: str | None = None
    question_topic: str | None = None
    kind: str = "answer"


def opt_kind(word: str, language: str | None) -> str | None:
    """Return "stop" or "start" for an opt-out keyword (see command_word) written by a resident
    whose language is `language`, else None."""
    if word in STOP_WORDS or language in _STOP_IN.get(word, ()):
        return "stop"
    if word in START_WORDS:
        return "start"
    return None


def fallback_kind(body: str, language: str | None = None, question_open: bool = False) -> str:
    """What a message is, by its words alone, when the dialogue could not answer it (or past
    the rate limit, where it does not answer).

    "stop" or "start" (the opt-out words, read in the resident's language if known); "thanks"
    (a thanks that asks nothing, as the dialogue reads it: is_short_thanks, with question_open;
    the dialogue does not answer it, and no lawyer needs it); "command" (another keyword, a
    menu key of one or two digits, or no letters or digits at all, an emoji: nobody's
    question); else "question".
    """
    cleaned = clean_text(body)
    word = command_word(cleaned)
    opt = opt_kind(word, language)
    if opt is not None:
        return opt
    if word in THANKS_WORDS or is_short_thanks(cleaned, question_open):
        return "thanks"
    if (word in _KEYWORDS or word in ASK_LAWYER_WORDS or is_menu_key(word)
            or not any(ch.isalnum() for ch in word)):
        return "command"
    return "question"


def is_short_thanks(body: str, question_open: bool = False) -> bool:
    """Tell whether a message of a few words only thanks and asks nothing (THANKS_COMPANIONS;
    WAITING_WORDS too when the resident's question is open, where "I'll wait" needs no thanks
    word). Emoji and punctuation between the words do not count: "Спасибо,жду звонка 🙏"."""
    if "?" in body:
        return False
    words = [command_word(w) for w in _WORD_SEPARATORS.split(body)
             if any(ch.isalnum() for ch in w)]
    if not 0 < len(words) <= MAX_THANKS_WORDS:
        return False
    if words[0] in DECLINE_WORDS and len(words) > 1:
        words = words[1:]
    if any(w in THANKS_WORDS for w in words):
        allowed = THANKS_COMPANIONS | POLITE_WORDS | (
            WAITING_WORDS if question_open else frozenset())
        return all(w in THANKS_WORDS or w in allowed for w in words)
    # "Жду звонка" without a thanks: only waiting words, each once; "Я всё жду звонка" and
    # "Жду жду" are impatience, and go to the lawyers with the question.
    return (question_open and any(w in WAITING_VERBS for w in words)
            and len(set(words)) == len(words)
            and all(w in WAITING_WORDS or w in WAITING_COMPANIONS or w in POLITE_WORDS
                    for w in words))


def is_menu_key(word: str) -> bool:
    """Tell whether a keyword is a number of one or two digits: a menu key, valid or not."""
    return word.isascii() and word.isdigit() and len(word) <= 2


def command_word(body: str) -> str:
    """Return the message as a keyword (see keyword); a Kazakh or Russian keyword typed in
    Latin letters comes back as the Cyrillic keyword it stands for ("TOQTA" as "ТОҚТА"), one
    with a polite word beside it as the keyword ("Стоп, пожалуйста" as "СТОП"), one after a
    greeting as the keyword ("Сәлеметсіз бе, сұрағым бар" as "СҰРАҒЫМБАР"), one said twice
    once ("Стоп стоп"), and stop keywords with their companions as a stop keyword ("Стоп! Не
    пишите мне больше"; stop_word)."""
    # Words as a reader sees them: "Стоп,не пишите", "Стоп…не пишите"; an emoji is no word
    # ("Стоп 🙏"), but a message of symbols only ("?") stays what it is.
    words = [w for w in _WORD_SEPARATORS.split(body) if any(ch.isalnum() for ch in w)] or (
        body.split())
    plain = [w for w in words if _one_keyword(w) not in POLITE_WORDS] or words
    whole = _one_keyword(" ".join(plain))
    if whole in _KEYWORDS:  # "Салам алейкум" is one greeting, not "Салам" and a question
        return whole
    for size in range(min(_MAX_GREETING_WORDS, len(plain) - 1), 0, -1):
        if _one_keyword(" ".join(plain[:size])) in GREETING_WORDS:
            plain = plain[size:]  # a greeting before something else: that something
            break
    if len(plain) > 1 and len({_one_keyword(w) for w in plain}) == 1:
        plain = plain[:1]
    word = _one_keyword(" ".join(plain))
    if word in _KEYWORDS or len(plain) == 1:
        return word
    return stop_word(plain) or word


def stop_word(words: list[str]) -> str | None:
    """The first stop keyword of a message made only of stop keywords (one or several words
    each) and STOP_COMPANIONS, else None. A whole-message stop word ("хватит", "отмена") counts
    only beside WEAK_STOP_COMPANIONS: "Мне хватит" is no stop, "Всё, хватит" is."""
    found: str | None = None
    weak: str | None = None
    companions: list[str] = []
    start = 0
    while start < len(words):
        for size in range(min(_MAX_STOP_WORDS, len(words) - start), 0, -1):
            candidate = _one_keyword(" ".join(words[start:start + size]))
            if candidate in ALONE_STOP_WORDS:
                return None  # (alone it is a keyword already: command_word)
            if candidate in STOP_WORDS:
                if candidate in WHOLE_MESSAGE_STOP_WORDS:
                    weak = weak or candidate
                else:
                    found = found or candidate
                break
        else:
            # A companion of one word or two ("не надо").
            size = 2 if _one_keyword(" ".join(words[start:start + 2])) in STOP_COMPANIONS and (
                start + 1 < len(words)) else 1
            companion = _one_keyword(" ".join(words[start:start + size]))
            if companion not in STOP_COMPANIONS:
                return None
            companions.append(companion)
        start += size
    if found is not None:
        return found
    if weak is not None and all(c in WEAK_STOP_COMPANIONS for c in companions):
        return weak
    return None


def _one_keyword(body: str) -> str:
    """The text as one keyword: keyword(), the Cyrillic keyword a Latin word stands for, or
    the keyword a Kazakh word typed with some Kazakh letters missing folds to ("ЖIБЕРМЕНИЗ",
    a Latin I for І and н for ң, is "ЖІБЕРМЕҢІЗ"). A keyword asked ("Меню?", "Помощь?") or
    quoted («Стоп») is the keyword, except a thanks or a stop or start asked ("Спасибо?",
    "Хорошо?", "Стоп?"), which asks something (bench/sms_harm.py's reviewers: "Стоп?" is
    no wish to stop)."""
    word = keyword(body)
    if word in _KEYWORDS:
        return word
    bare = _ASKED_OR_QUOTED.sub("", word)
    if bare and bare != word:
        found = _one_keyword(bare)
        asks = "?" in word and (found in THANKS_WORDS or found in STOP_WORDS
                                or found in START_WORDS)
        return found if found in _KEYWORDS and not asks else word
    return _one_plain_keyword(word)


def _one_plain_keyword(word: str) -> str:
    """_one_keyword for a word without question marks or quotes around it."""
    if not is_latin_word(word):
        return _FOLDED_KAZAKH.get(skeleton(word.lower()), word) if _CYRILLIC.search(
            word) else word
    if len(word) > _LONGEST_LATIN_KEYWORD:
        return word
    for language in ("kk", "ru"):
        found = _FOLDED_KEYWORDS.get(skeleton(to_cyrillic(word, language).lower()))
        if found is not None:
            return found
    return word


def keyword(body: str) -> str:
    """Return the message as a keyword: upper case, without spaces and punctuation."""
    text = unicodedata.normalize("NFC", body).strip().upper()
    word = _NOT_A_KEYWORD_CHAR.sub("", text) or text
    if _CYRILLIC.search(word) and _LATIN.search(word):
        word = word.translate(_LOOKALIKES)  # "CTOП" typed with Latin C and T is "СТОП"
    return word


# "0", or the letter О typed for it, then the question: "0 пенсия не пришла", "О, не пришла".
_ZERO_THEN_TEXT = re.compile(r"([0OoОо])[\s.,:;!)\-–—]+(.*\w.*)", re.S)


def _asked_after_zero(body: str, zero_offered: bool) -> str | None:
    """The question a resident wrote after "0" (ASK_LAWYER) in one message, else None. The
    letter О counts only right after an answer that offered 0 (zero_offered): elsewhere
    "О пенсии…" is the Russian "about"."""
    match = _ZERO_THEN_TEXT.fullmatch(body.strip())
    if match is None or not any(ch.isalpha() for ch in match.group(2)):
        return None
    if match.group(1) == ASK_LAWYER:
        return match.group(2).strip()
    # The letter: kept, since it may be the preposition ("О пенсии хочу спросить").
    return body.strip() if zero_offered else None


def clean_text(body: str) -> str:
    """Remove control characters from a resident's message, keeping line breaks."""
    return "".join(ch for ch in body if ch in "\n\t" or unicodedata.category(ch)[0] != "C").strip()


class SmsDialogue:
    """Answers SMS from the phone tree's content."""

    def __init__(self, content: Content, callback_days: int = 3) -> None:
        self.content = content
        self.callback_days = callback_days
        self.matcher = FaqMatcher(content)
        self.default_language = content.language_codes[0]

    def text(self, language: str, key: str) -> str:
        """Return an SMS text with its placeholders filled in (numbers as digits in SMS)."""
        return self.content.text(language, key).replace("{days}", str(self.callback_days)).strip()

    def reply(self, body: str, state: SmsState) -> SmsReply:
        """Answer one message; the language is remembered only once it is actually known."""
        result = self._reply(body, state)
        known = state.language or result.kind == "language" or (
            self.detected_language(body) is not None)
        if known:
            return result
        # Nothing told us the language: answer in the default one, but do not remember a guess
        # (the phone tree shares the caller's language and would skip its language menu).
        return replace(result, state=replace(result.state, language=None))

    def detected_language(self, body: str, remembered: str | None = None) -> str | None:
        """The language a message is written in, if one of the content's. A message that is a
        Kazakh keyword is Kazakh, also typed without Kazakh letters ("ЖИБЕРМЕНИЗ", "Кайырлы
        кун"), which detect_language alone reads as Russian. The language the number is known
        to write in (remembered) stays unless the message is clearly in the other
        (keeps_language): Kazakh typed without Kazakh letters ("Пенсия туспеди") reads as
        Russian by a single shared word."""
        cleaned = clean_text(body)
        if command_word(cleaned) in KAZAKH_KEYWORDS:
            detected: str | None = "kk"
        else:
            detected = detect_language(cleaned)
            if (detected is not None and remembered in self.content.language_codes
                    and detected != remembered
                    and keeps_language(cleaned, remembered, detected)):
                detected = remembered
        return detected if detected in self.content.language_codes else None

    def language_for(self, body: str, remembered: str | None) -> str:
        """The language to read a message's keywords in and answer in: the remembered one,
        else the message's own, else the default."""
        return remembered or self.detected_language(body) or self.default_language

    def _reply(self, body: str, state: SmsState) -> SmsReply:
        cleaned = clean_text(body)
        word = command_word(cleaned)
        detected = self.detected_language(cleaned, state.language)
        language = self.language_for(cleaned, state.language)
        opt = opt_kind(word, language)
        if opt == "start":
            new = SmsState(language=language)
            return SmsReply(self.text(language, "sms.start"), new, kind="start")
        if state.opted_out:
            # Nothing is sent to them; but what they write asking for help still reaches the
            # lawyers (who call: the question page says SMS are off), so a resident who sent
            # STOP, perhaps by mistake, and later writes "сын бьёт меня" is not lost.
            if fallback_kind(cleaned, language, state.question_open) == "question":
                asked_in = detected or language
                return SmsReply(None, replace(state, language=state.language or asked_in),
                                question_text=cleaned, kind="opted-out")
            return SmsReply(None, state, kind="opted-out")
        if opt == "stop":
            new = SmsState(language=language, opted_out=True)
            return SmsReply(self.text(language, "sms.stop"), new, kind="stop")
        if word in LANGUAGE_WORDS:
            chosen = LANGUAGE_WORDS[word]
            menu = self.text(chosen, "sms.language_set") + " " + self.text(chosen, "sms.menu")
            return self._send(menu, SmsState(language=chosen), "language")
        # A bare keyword ("МЕНЮ", "1") says little about the language: keep the remembered one.
        base = SmsState(language=language, last_topic=state.last_topic)
        if not word or word in MENU_WORDS:
            return self._send(self.text(language, "sms.menu"), base, "menu")
        if word in GREETING_WORDS or not any(ch.isalnum() for ch in word):
            # "Сәлем", "Здравствуйте", an emoji, "+": the menu; a question asked for waits.
            waiting = replace(base, awaiting_question=state.awaiting_question)
            return self._send(self.text(language, "sms.menu"), waiting, "menu")
        if word in THANKS_WORDS or is_short_thanks(cleaned, state.question_open):
            return SmsReply(None, replace(state, language=language), kind="thanks")
        if word in HELP_WORDS:
            return self._send(self.text(language, "sms.help"), base, "help")
        if word in MORE_WORDS:
            if state.more:
                return self._send(state.more, replace(base, answered_text=state.answered_text),
                                  "more")
            return self._send(self.text(language, "sms.nothing_more"), base, "more")
        if word in ASK_LAWYER_WORDS:
            word = ASK_LAWYER
        if word == ASK_LAWYER and state.answered_text:
            return self._question(state.answered_text, language, state.last_topic)
        if word == ASK_LAWYER or word in QUESTION_WORDS:
            asking = SmsState(language=language, last_topic=state.last_topic,
                              awaiting_question=True)
            return self._send(self.text(language, "sms.ask"), asking, "ask")
        asked = _asked_after_zero(cleaned, state.last_topic is not None)
        if asked is not None:
            # "0 пенсия не пришла уже 2 месяца": the 0 the answer asked for, with the question
            # itself after it; the topic's text again would not help.
            return self._question(asked, detected or language, state.last_topic)
        topic = self.content.menus["main"].options.get(word)
        if topic in self.content.topics:
            return self._answer(topic, language)
        if is_menu_key(word):
            # A key that is on no menu: the menu again, and a question asked for still waits.
            waiting = replace(base, awaiting_question=state.awaiting_question)
            return self._send(self.text(language, "sms.menu"), waiting, "menu")
        question_word = next((w for w in QUESTION_WORDS if word.startswith(w) and len(w) > 1),
                             None)
        # Free text is written in the language the resident wants: remember it.
        language = detected or language
        if state.awaiting_question or question_word:
            return self._question(cleaned, language, state.last_topic)
        match = self.matcher.match(cleaned, language)
        if (match is not None and match.confident and state.answered_text
                and match.topic == state.last_topic):
            # Their last message got this topic's answer, and they write again about it
            # ("Спасибо, но пенсия не пришла"): the same text would not help; a lawyer, with
            # the topic and this message (the earlier one stays in their SMS history).
            return self._question(cleaned, language, match.topic)
        if match is not None and match.confident:
            return self._answer(match.topic, language, cleaned)
        return self._question(cleaned, language, None)

    def _answer(self, topic: str, language: str, asked: str | None = None) -> SmsReply:
        """A topic's explainer with "0 for a lawyer"; asked: the resident's free text it
        answers, passed on by 0 if it has MIN_PASSED_WORDS words or more."""
        text = self.text(language, f"sms.topic.{topic}") + " " + self.text(
            language, "sms.answer_footer")
        passed = asked if asked and len(asked.split()) >= MIN_PASSED_WORDS else None
        return self._send(text, SmsState(language=language, last_topic=topic,
                                         answered_text=passed), "topic")

    def _question(self, text: str, language: str, topic: str | None) -> SmsReply:
        state = SmsState(language=language, last_topic=topic)
        received = self.text(language, "sms.question_received")
        return SmsReply(received, state, question_text=text, question_topic=topic,
                        kind="question")

    def _send(self, text: str, state: SmsState, kind: str) -> SmsReply:
        """Keep a reply within MAX_PARTS parts; the rest waits for MORE."""
        if fits(text, MAX_PARTS):
            return SmsReply(text, state, kind=kind)
        hint = self.text(state.language or self.default_language, "sms.more_hint")
        head, rest = split_to_fit(text, MAX_PARTS, hint)
        return SmsReply(head, replace(state, more=rest or None), kind=kind)

    def rate_limited(self, language: str | None) -> str:
        """The polite answer to a number that writes too much."""
        return self.text(language or self.default_language, "sms.rate_limited")
