"""Match a resident's free-text SMS to a topic of the phone tree, for an instant answer.

A confident match gets the topic's SMS answer; anything else goes to a lawyer. A confident wrong
answer is worse than a question in the lawyers' queue, so the thresholds favour precision (they
are tuned on tests/unit/sms_questions.yaml; `bench/sms_accuracy.py` prints the figures).

How a message is read:
- Latin words are written in Cyrillic (`sms_language.to_cyrillic`, Kazakh or Russian as the text
  itself suggests), then the text is normalised (lower case, no punctuation or emoji).
- Every word is folded (`sms_language.skeleton`: қ→к, і→и, ы/й→и, ё→е...), because many phones
  have no Kazakh letters and transliteration is inexact. Keywords are folded the same way.
- A keyword is cut to a stem and matched as the beginning of a word. Russian keywords: the
  Snowball stemmer ("инвалидность" → "инвалидн", matching "инвалидности"); a resident's word is
  stemmed too, so "инвалид" matches the stem "инвалидн" it is one letter short of. Kazakh has
  no Snowball stemmer; Kazakh is suffixing, so the keyword's dictionary form is already the
  beginning of its inflected forms ("зейнетақы" → "зейнетақымды"), except that a final к/қ/п
  becomes г/ғ/б before a vowel ("куәлік" → "куәлігім") and a verbal noun loses its у
  ("тіркеу" → "тіркелген"): those letters are cut. Typos: rapidfuzz's Levenshtein distance, at
  most 1 for stems of 6 letters or more (2 from 10), counts three quarters of a full match.
- Acronyms (ЦОН, АСП, МСЭ...: upper case in the content, up to 5 letters) match whole words only,
  or with a short case ending ("ЦОНа", "МСЭК").
- Keywords of every language count, whatever the resident's language: Kazakh speakers write
  "пенсия" and "справка", Russian speakers "ХҚКО".

Scoring: a topic's score is the sum of its matched keywords' weights; a phrase weighs as many
words as it has (all must occur, in any order), a few generic words ("документ", "құжат",
"пособие", "eGov") half. A word counts once per topic. A keyword that the other topics' answers
use too is a channel, not a topic (ЦОН / ХҚКО, eGov, the ID card: the explainers send residents
there for pensions and benefits alike); it counts half when the message also has another
topic's own words. Confident means: score at least `MIN_SCORE`, at least `MIN_RATIO` times the
runner-up topic, and no sign of another legal problem (alimony, loans, land, a neighbour,
wages... `OFF_TOPIC`), which a topic word inside the message does not outweigh: "алименты с
пенсии" goes to a lawyer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import snowballstemmer  # Russian stemming of keywords and residents' words
from rapidfuzz.distance import Levenshtein  # typo-tolerant comparison of stems

from flows.content import Content
from flows.sms_language import KAZAKH_CYRILLIC, detect_language, normalise, skeleton, to_cyrillic

# Tuned on tests/unit/sms_questions.yaml for precision (see bench/sms_accuracy.py).
MIN_SCORE = 1.0
MIN_RATIO = 2.0

FUZZY_STRENGTH = 0.75
GENERIC_WEIGHT = 0.5
SHARED_FACTOR = 0.5  # a channel word's weight when another topic's own words are there
MAX_ACRONYM = 5
MIN_PREFIX = 4  # shorter stems only match whole words (with a case ending)
MAX_STEM_GAP = 1  # a resident's stem may be this much shorter than a keyword's stem

# Words too general to point to one topic on their own ("какие документы нужны для АСП").
GENERIC = {
    # eGov is where every service is applied for, not a topic of its own.
    # "группа" alone is also a blood group or a kindergarten's: "2 группа" is a keyword.
    "ru": ("документ", "пособие", "выплата", "помощь", "свидетельство", "eGov", "егов", "группа"),
    "kk": ("құжат", "жәрдемақы", "төлем", "көмек", "жинақ", "eGov", "егов", "группа"),
}
# Words dropped from phrases.
STOP_WORDS = {
    "ru": frozenset("по о об на в во с со за для и или к от до из у при".split()),
    "kk": frozenset("туралы бойынша үшін және мен не немесе".split()),
}
# Signs of a legal problem outside the four topics: the message goes to a lawyer even when it
# also names a topic ("с пенсии удерживают алименты"). Matched as keywords are, but with no
# typo tolerance and a phrase's words side by side (FaqMatcher.scores): a sign that fires on
# "взять" or on "Простите ... деньги" would send ordinary questions to a lawyer.
OFF_TOPIC = {
    "ru": (
        "алименты", "развод", "развестись", "наследство", "завещание", "кредит", "займ",
        "микрозайм", "коллектор", "банк", "сосед", "забор", "земля", "земельный",
        "участок", "межа", "полиция", "суд", "зарплата", "уволили", "увольнение",
        "работодатель", "штраф", "мошенник", "обман", "избил", "бьет", "угрожает",
        "коммунальные", "квартира", "аренда", "налог", "скот", "корова", "украли", "кража",
        "нет воды", "водопровод", "газ", "опека", "ДТП", "авария", "сенокос", "пастбище",
        # Violence, eviction, a shut-off of light, gas or water (not of a pension: that is the
        # topic), a bailiff, refused treatment ("я пенсионер, меня выселяют": who they are is
        # no topic, what happens to them is).
        "избивает", "избили", "насилие", "выселить", "выселение", "выгоняет", "выгнали",
        "отключили свет", "отключили газ", "отключили воду", "отключили электричество",
        "исполнитель", "арест", "лечить", "лечение", "не лечат",
        # Someone taking the resident's money or papers, or hurting them; fraud, bribes;
        # deductions, bailiffs, blocked cards, claims to pay back; being struck off a register.
        "забирает", "отбирает", "отнимает", "отобрали", "побил", "ударил", "толкнул",
        "издевается", "заперли", "ворует", "не отдает", "не пускает", "просят код",
        "попросили код", "назвать код", "продиктовать код", "аферист",
        "развели", "требует деньги", "просят деньги", "удерживают", "удержали",
        "пристав", "ЧСИ", "списали", "списывает", "заблокировали", "переплата",
        "без спроса", "без согласия", "без моего согласия", "без меня", "перевести деньги",
        "отрезали", "требуют вернуть",
        "нотариус", "доверенность",
        # Taken, said in the past ("Сын забрал мою пенсию"): with what was taken or from whom,
        # since "забрать накопления из ЕНПФ" alone is the pension topic's question.
        "отнял", "отняла", "отняли", "забрал мою", "забрала мою", "забрали мою",
        "забрал у меня", "забрала у меня", "забрали у меня", "забрал карту", "забрала карту",
        "забрали карту", "сын забрал", "дочь забрала", "внук забрал", "внучка забрала",
        "невестка забрала", "зять забрал", "муж забрал", "жена забрала", "дети забрали",
        "родственники забрали",
        # A survivor's benefit, and benefits for utilities: none of the four topics.
        "кормильца", "коммуналка", "коммуналку", "коммуналки", "ЖКХ",
    ),
    "kk": (
        "алимент", "ажырасу", "мұрагер", "мұраға", "өсиет", "несие", "қарыз", "банк",
        "коллектор", "көрші", "қоршау", "жер учаскесі", "жер телімі", "жер үлесі", "учаске",
        "полиция", "сот", "жалақы", "жұмыстан шығарды", "айыппұл", "алаяқ", "ұрады", "ұрып",
        "пәтер", "сиыр", "мал", "ұрлады", "ұрлап", "су жоқ", "газ",
        "неке", "жайылым", "шабындық",
        "қуып", "қуды", "зорлық", "жарық өшірді", "газ өшірді", "су өшірді", "орындаушы",
        "емдеу", "емдемей",
        "тартып алды", "тартып алады", "тартып алып", "алып қойды", "алып қояды", "соқты",
        "қол көтерді", "қорқытады", "алдады", "алдап кетті",
        "пара сұрады", "пара сұрайды", "ақша сұрады", "ақша сұрайды", "код сұрады",
        "ұстап қалды", "ұстап қалады", "бұғатталды", "бұғаттады", "тіркеуден шығарды",
        "тіркеуден шығарып", "алып кетті", "алып кетеді", "артық төленді",
        "асыраушы", "асыраушысынан",
    ),
}
# Words by which the resident says who they are, not what they ask: "Я пенсионер, меня
# выселяют", "Я инвалид, меня избивает сын", "Мен зейнеткермін, ..." ask no pension or
# disability question. Such a word only counts as a generic word (half), so alone it is no
# confident answer; with the topic's own words ("я пенсионерка, накопления в ЕНПФ") it still
# is. Only the first person: Russian nominative forms in a message with "я", Kazakh forms
# with the first-person ending (-мін, -пін) or beside "мен". "Выплаты инвалидам", "сын
# инвалид", "зейнеткерлерге" ask about the topic, and count in full.
IDENTITY_RU = ("пенсионер", "пенсионерка", "инвалид", "инвалидка")
IDENTITY_KK = ("зейнеткер", "мүгедек")
FIRST_PERSON_KK_ENDINGS = ("мін", "пін")
# A message of one or two words ("инвалид", "я пенсионер") asks about the topic itself.
IDENTITY_MIN_WORDS = 3
# Case endings an acronym may carry glued on (folded): "ЦОНа", "ЦОНе", "МСЭК", "АСПға".
ACRONYM_ENDINGS = frozenset(
    "а е у и ом ов ам ах к ка ке ки га ге да де та те ти ди ги дан ден тан тен нан нен на не "
    "ни ниа иа".split()
)

_RU_STEMMER = snowballstemmer.stemmer("russian")
_IDENTITY_RU = frozenset(skeleton(w) for w in IDENTITY_RU)
_IDENTITY_KK = tuple(skeleton(w) for w in IDENTITY_KK)
_FIRST_PERSON_KK = tuple(skeleton(w) for w in FIRST_PERSON_KK_ENDINGS)
_I_RU, _I_KK = skeleton("я"), skeleton("мен")


@dataclass(frozen=True)
class Match:
    """The best topic for a message; `confident` when it may be answered without a lawyer."""

    topic: str
    score: float
    confident: bool


@dataclass(frozen=True)
class _Part:
    """One word of a keyword: folded stems that a resident's word may begin with."""

    prefixes: tuple[str, ...]
    whole_word: bool
    acronym: bool = False  # compared with doubled letters kept: АӘК is not "ақ"

    def strength(self, token: _Token) -> float:
        best = 0.0
        for prefix in self.prefixes:
            if self.whole_word:
                word = token.letters if self.acronym else token.folded
                if word == prefix or (
                    word.startswith(prefix) and word[len(prefix):] in ACRONYM_ENDINGS
                ):
                    return 1.0
                continue
            if token.folded.startswith(prefix):
                return 1.0
            stem = token.stem
            if len(stem) >= 5 and prefix.startswith(stem) and len(prefix) - len(stem) <= (
                MAX_STEM_GAP
            ):
                return 1.0
            if len(prefix) >= 6 and _fuzzy_prefix(prefix, token.folded):
                best = FUZZY_STRENGTH
        return best


@dataclass(frozen=True)
class _Term:
    """A keyword (or phrase) of a topic, or a sign of an off-topic problem."""

    label: str
    parts: tuple[_Part, ...]
    weight: float
    shared: bool = False  # other topics' explainers use it too (see FaqMatcher)


@dataclass(frozen=True)
class _Token:
    folded: str  # `skeleton` of the word
    stem: str  # `skeleton` of its Russian Snowball stem
    letters: str  # folded with doubled letters kept, for acronyms
    identity: bool = False  # the resident saying who they are (IDENTITY_RU, IDENTITY_KK)


def _identities(folded: list[str]) -> list[bool]:
    """Which of a message's folded words are the resident saying who they are."""
    if len(folded) < IDENTITY_MIN_WORDS:
        return [False] * len(folded)
    russian_i, kazakh_i = _I_RU in folded, _I_KK in folded
    found = []
    for word in folded:
        stem = next((s for s in _IDENTITY_KK if word.startswith(s)), None)
        found.append(
            (russian_i and word in _IDENTITY_RU)
            or (stem is not None and (word[len(stem):] in _FIRST_PERSON_KK
                                      or (kazakh_i and word == stem))))
    return found


def _fuzzy_prefix(prefix: str, word: str) -> bool:
    allowed = 2 if len(prefix) >= 10 else 1
    if len(word) < len(prefix) - 1:
        return False
    for size in (len(prefix) - 1, len(prefix), len(prefix) + 1):
        if size > len(word):
            break
        if Levenshtein.distance(prefix, word[:size], score_cutoff=allowed) <= allowed:
            return True
    return False


def _russian_stem(word: str) -> str:
    return str(_RU_STEMMER.stemWord(word))


def _kazakh_stem(word: str) -> str:
    """The beginning shared by a Kazakh word's inflected forms (see the module docstring)."""
    if len(word) > 5 and word.endswith("у") and word[-2] in "аеиоуыіәөүұрлй":
        word = word[:-1]
    if len(word) >= 5 and word[-1] in "кқп":
        word = word[:-1]
    return word


def _prefixes(word: str, language: str) -> tuple[str, ...]:
    stems = []
    if language == "kk":
        stems.append(_kazakh_stem(word))
        if not any(ch in KAZAKH_CYRILLIC for ch in word):
            russian = _russian_stem(word)  # a Russian word in Kazakh use: "пенсия", "справка"
            if len(russian) >= MIN_PREFIX:
                stems.append(russian)
    else:
        russian = _russian_stem(word)
        # A verb's stem can be very short ("избил" → "изб"): keep such words whole.
        stems.append(russian if len(russian) >= MIN_PREFIX else word)
    folded = []
    for stem in stems:
        value = skeleton(stem)
        if value and value not in folded:
            folded.append(value)
    return tuple(folded)


def _term(label: str, phrase: str, language: str, generic: Iterable[str]) -> _Term | None:
    raw_words = phrase.replace("-", " ").split()
    acronyms = [
        w.isupper() and len(w) <= MAX_ACRONYM and w.isalpha() for w in raw_words
    ]
    words = normalise(to_cyrillic(phrase.replace("-", " "), language)).split()
    if len(words) != len(raw_words):  # digits or symbols inside: read word by word
        acronyms = [False] * len(words)
    stop = STOP_WORDS.get(language, frozenset())
    parts: list[_Part] = []
    for word, acronym in zip(words, acronyms, strict=True):
        if word in stop and len(words) > 1:
            continue
        if acronym:
            parts.append(_Part((skeleton(word, single=False),), whole_word=True, acronym=True))
            continue
        prefixes = _prefixes(word, language)
        whole = all(len(p) < MIN_PREFIX for p in prefixes)
        parts.append(_Part(prefixes, whole_word=whole))
    if not parts:
        return None
    weight = float(len(parts))
    if len(parts) == 1 and normalise(phrase) in {normalise(g) for g in generic}:
        weight = GENERIC_WEIGHT
    return _Term(label, tuple(parts), weight)


# Building the terms stems and folds every keyword and every answer text: about half a second.
# A process builds them once per content (the web app, each test's app), keyed by the content
# they are built from; the module's word lists are not in the key (code, not data: whoever
# changes them at run time must clear _BUILT).
_BUILT: dict[object, tuple[dict[str, tuple[_Term, ...]], tuple[_Term, ...]]] = {}
_BUILT_MAX = 8


def _fingerprint(content: Content) -> object:
    """What the terms are built from: languages, topics, keywords and texts, as a hashable."""
    def freeze(value: object) -> object:
        if isinstance(value, dict):
            return tuple(sorted((k, freeze(v)) for k, v in value.items()))
        if isinstance(value, (list, tuple)):
            return tuple(freeze(v) for v in value)
        return value

    return (tuple(content.language_codes), tuple(content.topics),
            freeze(content.keywords), freeze(content.prompts))


class FaqMatcher:
    """Finds the topic of a free-text SMS from the content's keywords and topic titles."""

    def __init__(
        self, content: Content, *, min_score: float = MIN_SCORE, min_ratio: float = MIN_RATIO
    ) -> None:
        self.content = content
        self.min_score = min_score
        self.min_ratio = min_ratio
        self.topics = tuple(content.topics)
        key = _fingerprint(content)
        built = _BUILT.get(key)
        if built is None:
            built = self._build(content)
            if len(_BUILT) >= _BUILT_MAX:
                _BUILT.clear()
            _BUILT[key] = built
        terms, off_topic = built
        self._terms: dict[str, list[_Term]] = {topic: list(t) for topic, t in terms.items()}
        self._off_topic = list(off_topic)

    def _build(self, content: Content) -> tuple[dict[str, tuple[_Term, ...]], tuple[_Term, ...]]:
        """Every topic's terms, and the off-topic terms (frozen: shared between matchers)."""
        terms: dict[str, list[_Term]] = {topic: [] for topic in self.topics}
        seen: set[tuple[str, tuple[_Part, ...]]] = set()
        for language in content.language_codes:
            generic = GENERIC.get(language, ())
            phrases = [
                (topic, phrase)
                for topic, words in content.keywords.get(language, {}).items()
                for phrase in words
            ]
            phrases += [
                (topic, content.text(language, f"topic.{topic}.title")) for topic in self.topics
            ]
            for topic, phrase in phrases:
                term = _term(topic, phrase, language, generic)
                if term is None or (topic, term.parts) in seen or topic not in terms:
                    continue
                seen.add((topic, term.parts))
                terms[topic].append(term)
        # A topic's keyword that other topics' answers use as well is a channel, not a topic:
        # the explainers send residents to the ЦОН / ХҚКО and eGov.kz with their ID card for
        # pensions, disability and social assistance alike. Such a word only half counts when
        # the message also has another topic's own words ("в ЦОНе не принимают документы на
        # пенсию" is a pension question).
        for topic, topic_terms in terms.items():
            texts = [
                self._tokens(content.text(language, f"{kind}.{other}{part}"), language)
                for other in self.topics
                if other != topic
                for language in content.language_codes
                for kind, part in (("topic", ".fact"), ("topic", ".why"), ("topic", ".todo"),
                                   ("sms.topic", ""))
            ]
            topic_terms[:] = [
                replace(term, shared=any(_in_sequence(term, text) for text in texts))
                for term in topic_terms
            ]
        off_topic = [
            term
            for language, words in OFF_TOPIC.items()
            for word in words
            if (term := _term("off_topic", word, language, ())) is not None
        ]
        return ({topic: tuple(t) for topic, t in terms.items()}, tuple(off_topic))

    def _tokens(self, text: str, language: str) -> list[_Token]:
        """The message's words, transliterated, normalised, folded and stemmed."""
        script = detect_language(text) or language
        words = normalise(to_cyrillic(text, script)).split()
        folded = [skeleton(w) for w in words]
        return [
            _Token(fold, skeleton(_russian_stem(w)), skeleton(w, single=False), identity)
            for w, fold, identity in zip(words, folded, _identities(folded), strict=True)
        ]

    def scores(self, text: str, language: str) -> tuple[dict[str, float], bool]:
        """Every topic's score for text, and whether it shows an off-topic legal problem."""
        tokens = self._tokens(text, language)
        parts = {topic: _score(terms, tokens) for topic, terms in self._terms.items()}
        scores = {}
        for topic, (own, shared) in parts.items():
            others = any(o > 0 for other, (o, _) in parts.items() if other != topic)
            scores[topic] = own + shared * (SHARED_FACTOR if others else 1.0)
        # A sign of another problem: its words side by side and spelt as written (no typo
        # tolerance): "просят код" is one, "Простите, ... деньги" and "взять" are not.
        off_topic = any(_in_sequence(term, tokens) for term in self._off_topic)
        return scores, off_topic

    def match(self, text: str, language: str) -> Match | None:
        """Return the best topic for a resident's message, or None when no keyword occurs."""
        scores, off_topic = self.scores(text, language)
        ranked = sorted(self.topics, key=lambda t: -scores[t])  # stable: content order on ties
        best = ranked[0]
        score = scores[best]
        if score <= 0:
            return None
        runner_up = scores[ranked[1]] if len(ranked) > 1 else 0.0
        confident = (
            score >= self.min_score and score >= self.min_ratio * runner_up and not off_topic
        )
        return Match(best, round(score, 3), confident)


def _score(terms: list[_Term], tokens: list[_Token]) -> tuple[float, float]:
    """Sums of the matched terms' weights, own and shared: each word counts for one term only,
    longer phrases first, then the terms that match best, so that a typo's fuzzy match cannot
    take a word from an exact one."""
    candidates = [(term, _match(term, tokens, set())) for term in terms]
    ranked = sorted(
        ((term, value) for term, (value, _) in candidates if value > 0),
        key=lambda item: (-len(item[0].parts), -item[1]),
    )
    used: set[int] = set()
    own = shared = 0.0
    for term, _ in ranked:
        value, picked = _match(term, tokens, used)
        if picked and all(tokens[i].identity for i in picked):
            value *= GENERIC_WEIGHT
        if value > 0:
            used.update(picked)
            if term.shared:
                shared += value
            else:
                own += value
    return own, shared


def _in_sequence(term: _Term, tokens: list[_Token]) -> bool:
    """Whether the term's words occur one after another, exactly, in tokens (a text)."""
    size = len(term.parts)
    return any(
        all(part.strength(tokens[start + i]) >= 1.0 for i, part in enumerate(term.parts))
        for start in range(len(tokens) - size + 1)
    )


def _match(term: _Term, tokens: list[_Token], used: set[int]) -> tuple[float, list[int]]:
    """The term's weight times its weakest word's strength, and the words it takes."""
    picked: list[int] = []
    strength = 1.0
    for part in term.parts:
        best_index, best = -1, 0.0
        for index, token in enumerate(tokens):
            if index in used or index in picked:
                continue
            value = part.strength(token)
            if value > best:
                best_index, best = index, value
                if value >= 1.0:
                    break
        if best_index < 0:
            return 0.0, []
        picked.append(best_index)
        strength = min(strength, best)
    return term.weight * strength, picked
