"""SMS conversations through the signed webhook, asserting on TwiML and database rows."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from werkzeug.test import EnvironBuilder, run_wsgi_app

from flows.segments import segments
from flows.sms import SmsDialogue
from hotline.simulator import new_sid
from storage.models import Caller, Question, SmsMessage
from storage.retention import is_pseudonym
from tests.support import CALLER, Twilio, row_counts, run_cli, runtime


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The webhook does not depend on the backend; storage tests cover PostgreSQL."""
    return f"sqlite:///{tmp_path / 'hotline.sqlite3'}"


class Phone:
    """A resident's basic phone texting the hotline through Twilio."""

    def __init__(self, twilio: Twilio, number: str = CALLER) -> None:
        self.twilio, self.number = twilio, number

    def send(self, body: str, sid: str | None = None) -> str | None:
        """Text the hotline; return the reply (None when there is none)."""
        form = {"MessageSid": sid or new_sid("SM"), "AccountSid": "AC" + "1" * 32,
                "From": self.number, "To": "+77000000000", "Body": body, "NumSegments": "1"}
        response = self.twilio.post("/sms/incoming", form)
        assert response.status_code == 200, response.get_data(as_text=True)
        root = ET.fromstring(response.get_data(as_text=True))
        assert root.tag == "Response"
        messages = root.findall("Message")
        assert len(messages) <= 1
        return messages[0].text if messages else None


@pytest.fixture
def phone(twilio: Twilio) -> Phone:
    return Phone(twilio)


@pytest.fixture
def dialogue(app: Flask) -> SmsDialogue:
    return runtime(app).sms


def caller_row(db) -> Caller:
    with db() as session:
        return session.scalars(select(Caller)).one()


def questions(db) -> list[Question]:
    with db() as session:
        return list(session.scalars(select(Question).order_by(Question.id)))


def test_a_russian_conversation(app: Flask, phone: Phone, dialogue: SmsDialogue, db) -> None:
    assert phone.send("меню") == dialogue.text("ru", "sms.menu")
    answer = phone.send("1")
    assert answer == (dialogue.text("ru", "sms.topic.pension") + " "
                      + dialogue.text("ru", "sms.answer_footer"))
    assert phone.send("0") == dialogue.text("ru", "sms.ask")
    asked = "У мамы пенсию урезали в этом месяце, что делать?"
    assert phone.send(asked) == dialogue.text("ru", "sms.question_received")
    [question] = questions(db)
    assert (question.channel, question.language, question.topic, question.text) == (
        "sms", "ru", "pension", asked)
    assert question.status == "waiting" and question.caller_id is not None
    assert caller_row(db).language == "ru"
    # The consultant sees what the resident wrote, not an empty transcript.
    [row] = json.loads(run_cli(app, ["queue", "--json"]).output)
    assert (row["channel"], row["text"]) == ("sms", asked)
    assert f"wrote: {asked}" in run_cli(app, ["queue"]).output


def test_a_kazakh_conversation(phone: Phone, dialogue: SmsDialogue, db) -> None:
    assert phone.send("МӘЗІР") == dialogue.text("kk", "sms.menu")
    reply = phone.send("Зейнетақыға қашан шығамын, құжаттар қандай керек?")
    assert reply is not None and reply.startswith(dialogue.text("kk", "sms.topic.pension"))
    assert phone.send("көршім жерімді басып алды не істеймін") == dialogue.text(
        "kk", "sms.question_received")
    [question] = questions(db)
    assert question.language == "kk" and question.topic is None
    assert caller_row(db).language == "kk"


def test_zero_after_an_answer_passes_the_resident_s_own_message_to_a_lawyer(
        phone: Phone, dialogue: SmsDialogue, db) -> None:
    """A resident wrote their problem out and got the pension explainer: 0 passes what they
    wrote to a lawyer, tagged with the topic; nobody types a long message on a keypad twice."""
    story = "Мне 64 года, пенсию не назначили, в ЦОНе говорят нет стажа за колхоз. Что делать?"
    assert phone.send(story) == (dialogue.text("ru", "sms.topic.pension") + " "
                                 + dialogue.text("ru", "sms.answer_footer"))
    assert caller_row(db).sms_answered_text == story
    assert questions(db) == []
    assert phone.send("0") == dialogue.text("ru", "sms.question_received")
    [question] = questions(db)
    assert (question.text, question.topic, question.language, question.channel) == (
        story, "pension", "ru", "sms")
    assert caller_row(db).sms_answered_text is None
    # 0 again: the message was passed once; now the resident is asked for a new question.
    assert phone.send("0") == dialogue.text("ru", "sms.ask")
    assert len(questions(db)) == 1


def test_zero_after_a_short_keyword_or_another_message_asks_for_the_question(
        phone: Phone, dialogue: SmsDialogue, db) -> None:
    """Two words ("пенсия когда") or a menu key say too little to pass on; and once the
    resident has written something else (MENU), 0 no longer points at the earlier message."""
    assert phone.send("пенсия когда").startswith(dialogue.text("ru", "sms.topic.pension"))
    assert phone.send("0") == dialogue.text("ru", "sms.ask")
    assert phone.send("1").startswith(dialogue.text("ru", "sms.topic.pension"))
    assert phone.send("0") == dialogue.text("ru", "sms.ask")
    assert phone.send("МЕНЮ") == dialogue.text("ru", "sms.menu")  # changed their mind
    assert phone.send("стаж в колхозе не засчитали трудовая книжка потерялась как быть"
                      ).startswith(dialogue.text("ru", "sms.topic.pension"))
    assert phone.send("МЕНЮ") == dialogue.text("ru", "sms.menu")
    assert phone.send("0") == dialogue.text("ru", "sms.ask")
    assert questions(db) == []


def test_zero_passes_the_answered_message_only_as_the_next_message_within_a_day(
        phone: Phone, dialogue: SmsDialogue, db) -> None:
    """A thanks in between, or a day gone by: 0 then asks for the question, rather than
    queueing a message the resident may have written about something else."""
    story = "Мне 64 года, пенсию не назначили, в ЦОНе говорят нет стажа за колхоз. Что делать?"
    phone.send(story)
    assert phone.send("Спасибо") is None
    assert phone.send("0") == dialogue.text("ru", "sms.ask")
    assert phone.send("МЕНЮ") == dialogue.text("ru", "sms.menu")
    phone.send(story)
    with db() as session:  # the answer came the day before yesterday
        asked = session.scalars(select(SmsMessage).where(SmsMessage.body == story)
                                .order_by(SmsMessage.id.desc())).first()
        asked.created_at -= timedelta(hours=25)
    assert phone.send("0") == dialogue.text("ru", "sms.ask")
    assert questions(db) == []


def test_a_bare_keyword_keeps_the_remembered_language(phone: Phone, dialogue: SmsDialogue,
                                                      db) -> None:
    phone.send("Сәлеметсіз бе, зейнетақы туралы")
    assert phone.send("МЕНЮ") == dialogue.text("kk", "sms.menu")
    assert caller_row(db).language == "kk"


def test_language_keywords_switch_and_are_remembered(phone: Phone, dialogue: SmsDialogue,
                                                     db) -> None:
    assert phone.send("RU").startswith(dialogue.text("ru", "sms.language_set"))
    assert phone.send("?") == dialogue.text("ru", "sms.menu")
    assert phone.send("ҚАЗ").startswith(dialogue.text("kk", "sms.language_set"))
    assert phone.send("help") == dialogue.text("kk", "sms.help")
    assert caller_row(db).language == "kk"


def test_stop_sends_one_confirmation_then_nothing_until_start(phone: Phone,
                                                              dialogue: SmsDialogue,
                                                              db) -> None:
    phone.send("МЕНЮ")
    assert phone.send("Stop") == dialogue.text("ru", "sms.stop")
    assert caller_row(db).sms_opted_out
    assert phone.send("МЕНЮ") is None
    # What they write asking for help is not answered by SMS but reaches the lawyers, who call
    # (a STOP sent by mistake must not lose "сын бьёт меня" written a week later).
    assert phone.send("Вопрос: как оформить пенсию") is None
    [question] = questions(db)
    assert (question.text, question.channel) == ("Вопрос: как оформить пенсию", "sms")
    with db() as session:
        assert session.scalars(select(SmsMessage).where(
            SmsMessage.direction == "out")).all()[-1].body == dialogue.text("ru", "sms.stop")
    assert phone.send("Спасибо") is None and len(questions(db)) == 1  # no question: no row
    assert phone.send("СТАРТ") == dialogue.text("ru", "sms.start")
    assert not caller_row(db).sms_opted_out
    assert phone.send("меню") == dialogue.text("ru", "sms.menu")


def age_and_pseudonymise(app: Flask, db) -> None:
    """The resident is not heard from for 400 days; retention replaces their number."""
    with db() as session:
        for caller in session.scalars(select(Caller)):
            caller.last_seen = caller.last_seen - timedelta(days=400)
    assert "1 callers pseudonymised" in run_cli(app, ["retention"]).output


def test_stop_holds_after_the_number_is_pseudonymised(app: Flask, phone: Phone,
                                                      dialogue: SmsDialogue, db) -> None:
    assert phone.send("ТОҚТА") == dialogue.text("kk", "sms.stop")
    age_and_pseudonymise(app, db)
    # The resident writes again a year later: a new record with the number, and their STOP
    # still holds (the old record keeps it under the pseudonym).
    assert phone.send("МӘЗІР") is None
    assert phone.send("Зейнетақы туралы сұрақ") is None  # kept for the lawyers, not answered
    assert [q.text for q in questions(db)] == ["Зейнетақы туралы сұрақ"]
    with db() as session:
        # The question joins the resident to their earlier record at once (its history for
        # the lawyer), and the STOP comes along with it.
        [back] = session.scalars(select(Caller))
        assert back.phone == CALLER and back.sms_opted_out
    # START lifts it: retention's later pseudonymisation does not bring the STOP back.
    assert phone.send("START") == dialogue.text("kk", "sms.start")
    assert phone.send("МӘЗІР") == dialogue.text("kk", "sms.menu")
    with db() as session:  # answered long ago: retention leaves callers with recent ones
        question = session.scalars(select(Question)).one()
        question.status, question.closed_at = "closed", datetime.now(UTC) - timedelta(days=400)
    age_and_pseudonymise(app, db)
    with db() as session:
        [joined] = session.scalars(select(Caller))
        assert is_pseudonym(joined.phone) and not joined.sms_opted_out
    assert phone.send("МӘЗІР") == dialogue.text("kk", "sms.menu")


@pytest.mark.parametrize("word", [
    "ТОҚТА", "стоп", "UNSUBSCRIBE", " s t o p ",
    # Polite and longer ways of saying it, and a Latin C and T in a Cyrillic word.
    "Тоқтатыңыз", "тоқтат", "toqtat", "Жібермеңіз", "Стоп, пожалуйста!", "STOP please",
    "Не пишите мне больше", "Прекратите", "Отписка", "CTOП",
    # Said twice, or in several stop words with their companions.
    "Стоп стоп", "stop stop", "toqta toqta", "Стоп! Не пишите", "Больше не присылайте",
    "Отпишите меня", "Хватит писать", "Удалите мой номер", "Хабарлама жібермеңіз",
    "SMS жібермеңіз", "Маған хабарлама жазбаңыз", "Жібермеңізші",
    # With an emoji, without a space after the comma, with a dash or an ellipsis; a Latin i
    # for the Kazakh і; more ways of saying it; Kazakh and Russian typed in Latin letters.
    "Стоп 🙏", "СТОП!!! 😡", "Стоп,не пишите", "Стоп — не пишите", "Стоп…не пишите",
    "Жiбермениз", "Не отправляйте мне смс", "Перестаньте писать", "Не надо мне писать",
    "Не беспокойте меня", "Удалите мой номер из рассылки", "Отписаться от рассылки",
    "Стоп спам", "Стоп, больше не надо", "Не пишите мне больше никогда",
    "Это не мой номер, не пишите", "Всё, хватит", "Тоқтатыңызшы", "Жазбаңдар",
    "Magan sms jibermeniz", "ne pishite mne bolshe", "Нөмірімді өшірініз",
    "Мені тізімнен өшірініз", "Отписка",
    # The polite "stop" of an older Kazakh speaker, with and without Kazakh letters; a stop
    # quoted.
    "Тоқтаңыз", "тоқтаңызшы", "Токтаныз", "Toqtanyz", "«Стоп»",
    # "Please" as it is typed, and in Latin letters.
    "СТОП ПОЖАЛУСТА", "Стоп пж", "Stop pozhaluista", "Toqta otinemin",
    # bench/sms_harm.py's last stops not honoured but one (the ambiguous "Керек емес").
    "Больше не надо писать", "ctop", "Маған керек емес, жазбаңыз", "Жазба", "Жіберме",
])
def test_stop_words_in_every_language(phone: Phone, db, word: str) -> None:
    assert phone.send(word)
    assert caller_row(db).sms_opted_out
    assert questions(db) == []  # a wish to stop is nobody's question
    assert phone.send("1") is None  # and nothing more is sent


@pytest.mark.parametrize(("body", "key"), [
    ("ЖИБЕРМЕНИЗ", "sms.stop"), ("Токтатыныз", "sms.stop"), ("Жазбаныз", "sms.stop"),
    ("Кайырлы кун", "sms.menu"), ("Komek", "sms.help")])
def test_a_kazakh_keyword_without_kazakh_letters_is_answered_in_kazakh(
        phone: Phone, dialogue: SmsDialogue, db, body: str, key: str) -> None:
    """Many phones have no Kazakh letters: the keyword is Kazakh all the same, so the answer
    is, and Kazakh is remembered for the number (the phone tree reads it too)."""
    assert phone.send(body) == dialogue.text("kk", key)
    assert caller_row(db).language == "kk"


@pytest.mark.parametrize(("body", "key"), [
    ("Помощь?", "sms.help"), ("Меню?", "sms.menu"), ("help?", "sms.help"),
    ("«Меню»", "sms.menu"), ("?", "sms.menu")])
def test_a_keyword_asked_or_quoted_is_the_keyword(
        phone: Phone, dialogue: SmsDialogue, db, body: str, key: str) -> None:
    assert phone.send(body) in (dialogue.text("ru", key), dialogue.text("kk", key))
    assert questions(db) == []


@pytest.mark.parametrize("body", ["Спасибо нет", "Рахмет жок"])
def test_no_after_a_thanks_is_a_question(phone: Phone, db, body: str) -> None:
    """"No" before a thanks declines; after it, it may say the pension is still not there."""
    assert phone.send("1")
    assert phone.send(body) is not None
    assert [q.text for q in questions(db)] == [body]


def test_russian_in_latin_capitals_keeps_a_russian_speaker_russian(
        phone: Phone, dialogue: SmsDialogue, db) -> None:
    """Capitals are no Kazakh evidence: the question is answered, stored and remembered in
    Russian (it was answered in Kazakh and the number switched to Kazakh)."""
    assert phone.send("Здравствуйте") == dialogue.text("ru", "sms.menu")
    assert phone.send("OTKLUCHILI SVET") == dialogue.text("ru", "sms.question_received")
    [stored] = questions(db)
    assert stored.language == "ru" and caller_row(db).language == "ru"


@pytest.mark.parametrize(("body", "kind"), [
    ("Пенсия туспеди", "topic"), ("ПЕНСИЯ ТУСПЕДИ", "topic"),
    ("Электр жарыгын оширип тастады", "question")])
def test_kazakh_without_kazakh_letters_keeps_a_kazakh_speaker_kazakh(
        phone: Phone, dialogue: SmsDialogue, db, body: str, kind: str) -> None:
    """A resident known to write Kazakh types it without Kazakh letters: one word shared with
    Russian ("пенсия") is no reason to answer in Russian and switch the number, and the phone
    tree with it, to Russian. A clearly Russian message still switches."""
    assert phone.send("Сәлеметсіз бе") == dialogue.text("kk", "sms.menu")
    reply = phone.send(body)
    if kind == "topic":
        assert reply.startswith(dialogue.text("kk", "sms.topic.pension"))
    else:
        assert reply == dialogue.text("kk", "sms.question_received")
        assert [q.language for q in questions(db)] == ["kk"]
    assert caller_row(db).language == "kk"
    assert phone.send("Здравствуйте, когда придёт пенсия по возрасту?").startswith(
        dialogue.text("ru", "sms.topic.pension"))
    assert caller_row(db).language == "ru"


@pytest.mark.parametrize(("known", "body", "language"), [
    ("Сәлеметсіз бе", "орысша жазыныз", "ru"), ("Здравствуйте", "Казахский", "kk"),
    ("Здравствуйте", "На казахском", "kk"), ("Сәлеметсіз бе", "Пишите по-русски", "ru")])
def test_a_language_asked_for_in_words_is_set(phone: Phone, dialogue: SmsDialogue, db,
                                              known: str, body: str, language: str) -> None:
    phone.send(known)
    assert phone.send(body).startswith(dialogue.text(language, "sms.language_set"))
    assert caller_row(db).language == language
    assert questions(db) == []


def test_a_thanks_asked_is_a_question(phone: Phone, db) -> None:
    """ "Хорошо?" after an answer asks something: a lawyer sees it, as before."""
    assert phone.send("1")
    assert phone.send("Хорошо?") is not None
    assert len(questions(db)) == 1


@pytest.mark.parametrize(("body", "language"), [
    ("Сәлеметсіз бе", "kk"), ("Салем", "kk"), ("Salem", "kk"), ("Здравствуйте", "ru"),
    ("Добрый день!", "ru"), ("Zdravstvuyte", "ru"), ("😀", "kk"), ("+", "kk"), ("...", "kk"),
    ("Здрасьте", "ru"), ("Салам", "ru"), ("Ассаламу алейкум", "ru"),  # said in both
    ("Салам алейкум", "ru"), ("Салем алейкум", "kk"),
])
def test_a_greeting_or_a_symbol_gets_the_menu_not_a_lawyer(
        phone: Phone, dialogue: SmsDialogue, db, body: str, language: str) -> None:
    assert phone.send(body) == dialogue.text(language, "sms.menu")
    assert questions(db) == []


@pytest.mark.parametrize("body", ["Рахмет", "Спасибо!", "ok", "Жақсы", "Понятно",
                                  # Declining "0 for a lawyer", and goodbyes.
                                  "Нет, спасибо", "Жоқ, рахмет", "Спасибо, до свидания",
                                  "Сау болыңыз", "Благодарю", "Спасибо вам большое за помощь",
                                  "Рахмет сау болыңыз", "До свидания"])
def test_thanks_after_an_answer_ends_the_conversation(phone: Phone, db, body: str) -> None:
    assert phone.send("1")
    assert phone.send(body) is None  # nothing sent, nothing for a lawyer
    assert questions(db) == []


@pytest.mark.parametrize("body", ["Спасибо, жду звонка", "Рахмет, күтемін", "Көп рахмет сізге!",
                                  "Ок, спасибо большое", "Spasibo", "Спасибо,жду звонка 🙏",
                                  "Рахмет 👍"])
def test_a_short_thanks_while_a_question_waits_is_no_question(phone: Phone, db,
                                                              body: str) -> None:
    """A resident whose question waits answers its receipt politely: no reply, and nothing
    more for a lawyer to close."""
    phone.send("Сосед перекрыл мне воду, а аким не отвечает")  # their question, queued
    assert len(questions(db)) == 1
    assert phone.send(body) is None
    assert len(questions(db)) == 1


@pytest.mark.parametrize("body", ["Жду звонка", "Буду ждать", "Күтемін", "Жду вашего звонка",
                                  "Мен күтемін"])
def test_i_will_wait_while_a_question_waits_needs_no_thanks_word(phone: Phone, db,
                                                                body: str) -> None:
    """How many answer the receipt SMS: no reply, no second question (nor one of the day's
    five), and the remembered language stays."""
    phone.send("Сосед перекрыл мне воду, а аким не отвечает")
    assert phone.send(body) is None
    assert len(questions(db)) == 1
    assert caller_row(db).language == "ru"


@pytest.mark.parametrize("body", [
    "Стоп, пенсия не пришла", "Стоп стоп мне пенсию не дали",
    # "Отпишитесь (мне)" is everyday Russian for "write back to me"; "хватит" and "отмена"
    # stop only alone.
    "Отпишитесь мне пожалуйста", "Отпишите мне смс", "Здравствуйте, отпишитесь", "Мне хватит",
    "Мне отмена", "Больше не надо", "Хватит бить", "Маған жазбаңыз, ұлыма жазыңыз",
    # "не писать" and "отписка" are other things beside other words; a Russian word does not
    # fold onto a keyword ("беспокоите" is not "беспокойте").
    "Мне не писать", "Уже не надо писать", "Уже отписка", "Не беспокоите",
    # Asked, it asks something (bench/sms_harm.py's reviewers).
    "Стоп?"])
def test_a_stop_word_inside_a_question_is_no_stop(phone: Phone, db, body: str) -> None:
    """Only a message made of stop words (and their companions) stops: one other word and it
    is read as any message is."""
    assert phone.send(body)
    assert not caller_row(db).sms_opted_out


@pytest.mark.parametrize("body", [
    "Я инвалид, меня избивает сын", "Мен зейнеткермін, балам мені үйден қуып жатыр",
    # Someone taking the resident's money, fraud, bribes, deductions, a blocked card.
    "Сын забирает мою пенсию", "Невестка отбирает пенсию и не кормит",
    "Позвонили из ЕНПФ, просят код из смс", "Соцработник требует деньги за оформление АСП",
    "С пенсии удерживают долг", "Приставы списали пенсию", "Заблокировали пенсионную карту",
    "Сын снимает мою пенсию с карты без спроса", "Ұлым зейнетақымды тартып алады",
    "МСЭК-ке пара сұрады", "Зейнетақыдан ақша ұстап қалды",
    "Я пенсионер, меня выселяют", "Я пенсионер, врач отказывается лечить",
    "Пенсионер, отключили свет за долги", "Пенсионерка, судебный исполнитель списал всю пенсию",
])
def test_who_the_resident_is_is_no_topic_what_happens_to_them_goes_to_a_lawyer(
        phone: Phone, dialogue: SmsDialogue, db, body: str) -> None:
    """"Пенсионер" or "мүгедек" says who writes, not what they ask: no stock pension or
    disability answer to someone beaten, evicted or refused treatment."""
    assert phone.send(body) in {dialogue.text(language, "sms.question_received")
                                for language in ("kk", "ru")}
    [question] = questions(db)
    assert question.text == body


@pytest.mark.parametrize("body", ["Я всё жду звонка", "Жду жду", "Я всё жду вашего звонка"])
def test_impatience_while_a_question_waits_reaches_the_lawyers(phone: Phone, db,
                                                               body: str) -> None:
    """"I am still waiting" is no thanks: it gets an answer, and the lawyers see it."""
    phone.send("Сосед перекрыл мне воду, а аким не отвечает")
    assert phone.send(body) is not None
    with db() as session:
        texts = [q.text or "" for q in session.scalars(select(Question))]
    assert any(body in text for text in texts)


@pytest.mark.parametrize("body", ["Хорошо, жду звонка", "Рахмет, күтемін", "Ок жду звонка"])
def test_waiting_for_a_call_with_no_question_open_goes_to_the_lawyers(
        phone: Phone, db, body: str) -> None:
    """After the SMS that says we could not reach them (their question closed), "I'll wait
    for the call" asks for another one: a question, not a thanks."""
    phone.send("Сосед перекрыл мне воду, а аким не отвечает")
    with db() as session:
        session.scalars(select(Question)).one().status = "closed"
    assert phone.send(body) is not None
    assert len(questions(db)) == 2


@pytest.mark.parametrize("body", ["Спасибо, пенсия не пришла", "Рахмет, қашан қоңырау шалады?",
                                  "Спасибо, а когда позвонят", "Спасибо жду звонка по пенсии "
                                  "мужа уже месяц"])
def test_thanks_with_a_question_in_it_is_answered(phone: Phone, dialogue: SmsDialogue, db,
                                                  body: str) -> None:
    """Not taken for a thanks: it gets the topic's answer or goes to the lawyers."""
    reply = phone.send(body)
    assert reply is not None
    footers = [dialogue.text(language, "sms.answer_footer") for language in ("kk", "ru")]
    assert len(questions(db)) == 1 or any(footer in reply for footer in footers)


@pytest.mark.parametrize(("body", "language"), [
    ("Сұрақ бар", "kk"), ("У меня вопрос", "ru"), ("Сұрағым бар", "kk"),
    # A greeting first, as most residents write.
    ("Сәлеметсіз бе, сұрағым бар", "kk"), ("Salem, menin suragym bar", "kk"),
    ("Добрый день, у меня вопрос", "ru"),
])
def test_i_have_a_question_is_asked_for_and_the_next_message_is_it(
        phone: Phone, dialogue: SmsDialogue, db, body: str, language: str) -> None:
    assert phone.send(body) == dialogue.text(language, "sms.ask")
    assert questions(db) == []
    phone.send("Көршім жерімді алып қойды" if language == "kk" else "Сосед забрал мой участок")
    assert len(questions(db)) == 1


def test_the_same_topic_again_goes_to_a_lawyer(phone: Phone, dialogue: SmsDialogue,
                                               db) -> None:
    """A resident who has the pension answer and writes again about their pension ("Спасибо,
    но пенсия не пришла") needs a lawyer, not the same text again; the topic goes with it."""
    first = phone.send("Когда мне назначат пенсию, мне 63")
    assert first is not None and first.startswith(dialogue.text("ru", "sms.topic.pension"))
    assert questions(db) == []
    again = phone.send("Спасибо, но пенсия так и не пришла")
    assert again == dialogue.text("ru", "sms.question_received")
    [question] = questions(db)
    assert (question.text, question.topic) == ("Спасибо, но пенсия так и не пришла", "pension")


@pytest.mark.parametrize("zero", ["Ноль", "О", "o", "нөл"])
def test_zero_typed_as_a_letter_or_a_word_passes_the_question_on(
        phone: Phone, dialogue: SmsDialogue, db, zero: str) -> None:
    """Many keypads put O beside 0, and some residents write the word."""
    asked = "Когда мне назначат пенсию, мне 63"
    phone.send(asked)
    assert phone.send(zero) == dialogue.text("ru", "sms.question_received")
    [question] = questions(db)
    assert (question.text, question.topic) == (asked, "pension")


def test_spravka_is_a_certificate_not_the_help_text(phone: Phone, dialogue: SmsDialogue,
                                                    db) -> None:
    """"Справка" to a resident is a certificate: the documents answer, not how to use SMS."""
    assert phone.send("Справка").startswith(dialogue.text("ru", "sms.topic.documents"))


def test_a_polite_word_beside_a_keyword_keeps_it_a_keyword(
        phone: Phone, dialogue: SmsDialogue, db) -> None:
    assert phone.send("Меню пожалуйста") == dialogue.text("ru", "sms.menu")
    assert questions(db) == []


@pytest.mark.parametrize(("word", "language", "key"), [
    ("menyu", "ru", "sms.menu"), ("MAZIR", "kk", "sms.menu"), ("Mäzir", "kk", "sms.menu"),
    ("KOMEK", "kk", "sms.help"), ("pomoshch", "ru", "sms.help"), ("vopros", "ru", "sms.ask"),
    ("Sūraq", "kk", "sms.ask"), ("toqta", "kk", "sms.stop"), ("Otpisatsya", "ru", "sms.stop"),
])
def test_keywords_typed_in_latin_letters(phone: Phone, dialogue: SmsDialogue, db, word: str,
                                         language: str, key: str) -> None:
    """A phone without a Cyrillic keyboard, or the Kazakh Latin alphabet: the same keyword."""
    phone.send("МЕНЮ" if language == "ru" else "МӘЗІР")  # the language, as a keyword keeps it
    assert phone.send(word) == dialogue.text(language, key)
    assert questions(db) == []
    assert caller_row(db).sms_opted_out == (key == "sms.stop")


@pytest.mark.parametrize(("stop", "start", "language"), [
    ("СТОП", "Начать снова", "ru"), ("СТОП", "Старт снова", "ru"),
    ("ТОҚТА", "Қайта бастау", "kk"), ("ТОҚТА", "Кайта бастау", "kk")])
def test_start_as_the_stop_reply_words_it(phone: Phone, dialogue: SmsDialogue, db, stop: str,
                                          start: str, language: str) -> None:
    """The stop reply says "чтобы начать снова…" / "қайта бастау үшін…": written back, that
    starts again (it was no reply at all, and a question nobody asked)."""
    assert phone.send(stop) == dialogue.text(language, "sms.stop")
    assert phone.send(start) == dialogue.text(language, "sms.start")
    assert not caller_row(db).sms_opted_out
    assert questions(db) == []


@pytest.mark.parametrize(("first", "question", "language"), [
    ("Хочу задать вопрос", "Мне 63 года пенсию не назначили что делать", "ru"),
    ("Есть вопрос к юристу", "Мне 63 года пенсию не назначили что делать", "ru"),
    ("Можно задать вопрос?", "Мне 63 года пенсию не назначили что делать", "ru"),
    ("Сізге сұрағым бар", "Зейнетақым екі ай келмеді не істеймін", "kk"),
    ("Менде сұрақ бар", "Зейнетақым екі ай келмеді не істеймін", "kk"),
])
def test_i_want_to_ask_then_the_question_reaches_a_lawyer(
        phone: Phone, dialogue: SmsDialogue, db, first: str, question: str,
        language: str) -> None:
    """"I want to ask" is asked for the question (no empty question queued); the question
    written next goes to the lawyers, not answered with a topic's text."""
    assert phone.send(first) == dialogue.text(language, "sms.ask")
    assert questions(db) == []
    assert phone.send(question) == dialogue.text(language, "sms.question_received")
    assert [q.text for q in questions(db)] == [question]


@pytest.mark.parametrize(("topic_key", "then", "asked"), [
    ("1", "0 пенсия не пришла уже 2 месяца", "пенсия не пришла уже 2 месяца"),
    ("1", "0, пенсия не пришла", "пенсия не пришла"),
    ("1", "О пенсия не пришла", "О пенсия не пришла"),  # the letter, kept: maybe "about"
])
def test_zero_with_the_question_after_it_reaches_a_lawyer(
        phone: Phone, dialogue: SmsDialogue, db, topic_key: str, then: str,
        asked: str) -> None:
    """The answer ends "reply 0 for a lawyer"; a resident writes 0 and the question in one
    message: a lawyer gets it, not the same topic's text again."""
    phone.send("МЕНЮ")
    assert phone.send(topic_key).startswith(dialogue.text("ru", "sms.topic.pension"))
    assert phone.send(then) == dialogue.text("ru", "sms.question_received")
    [stored] = questions(db)
    assert (stored.text, stored.topic) == (asked, "pension")


def test_the_letter_o_before_text_is_a_word_where_no_0_was_offered(
        phone: Phone, dialogue: SmsDialogue, db) -> None:
    """Without an answer that offered 0, "О пенсии…" is the Russian "about": matched as any
    message (here the pension topic's answer), not taken for 0."""
    assert phone.send("О пенсии по возрасту когда назначат").startswith(
        dialogue.text("ru", "sms.topic.pension"))
    assert questions(db) == []


def test_latin_start_after_a_latin_stop(phone: Phone, dialogue: SmsDialogue, db) -> None:
    assert phone.send("TOKTA") == dialogue.text("kk", "sms.stop")
    assert phone.send("basta") == dialogue.text("kk", "sms.start")
    assert not caller_row(db).sms_opted_out


@pytest.mark.parametrize("word", ["Баста!", "basta"])
def test_basta_from_a_russian_speaker_stops(phone: Phone, dialogue: SmsDialogue, db,
                                           word: str) -> None:
    """"Баста" is Kazakh "start" but Russian "enough!": in Russian it must not keep messages on."""
    phone.send("МЕНЮ")
    assert phone.send(word) == dialogue.text("ru", "sms.stop")
    assert caller_row(db).sms_opted_out
    assert phone.send("Когда пенсия?") is None  # not answered; kept for the lawyers
    assert [q.text for q in questions(db)] == ["Когда пенсия?"]
    assert phone.send("СТАРТ") == dialogue.text("ru", "sms.start")
    assert not caller_row(db).sms_opted_out


def test_a_key_on_no_menu_gets_the_menu_not_a_lawyer(phone: Phone, dialogue: SmsDialogue,
                                                     db) -> None:
    assert phone.send("7") == dialogue.text("kk", "sms.menu")
    assert phone.send("0") == dialogue.text("kk", "sms.ask")
    # Asked to write the question, the resident presses a wrong key: the menu, and the
    # question asked for still waits for the next message.
    assert phone.send("55") == dialogue.text("kk", "sms.menu")
    assert questions(db) == []
    assert phone.send("Жерім туралы сұрақ бар") == dialogue.text("kk", "sms.question_received")
    [question] = questions(db)
    assert question.text == "Жерім туралы сұрақ бар"
    # Three digits or more are no menu key: a question, as before (a year, an amount).
    assert phone.send("2025") == dialogue.text("kk", "sms.question_received")
    assert len(questions(db)) == 2


def test_a_duplicated_message_sid_is_answered_once_and_stored_once(phone: Phone, db) -> None:
    sid = new_sid("SM")
    first = phone.send("Как получить справку о пенсионных отчислениях в ЦОНе и что взять", sid)
    assert first
    assert phone.send("Как получить справку о пенсионных отчислениях в ЦОНе и что взять",
                      sid) is None
    with db() as session:
        inbound = session.scalars(select(SmsMessage).where(SmsMessage.direction == "in")).all()
        assert len(inbound) == 1
    assert len(questions(db)) <= 1


def test_an_empty_body_gets_the_menu(phone: Phone, dialogue: SmsDialogue) -> None:
    assert phone.send("") == dialogue.text("kk", "sms.menu")


def test_a_1600_character_question_is_kept_whole_and_the_reply_is_short(
    phone: Phone, db
) -> None:
    body = ("Здравствуйте у меня вопрос про землю и дом соседа " * 40)[:1600]
    reply = phone.send(body)
    assert reply is not None and segments(reply).parts <= 3
    [question] = questions(db)
    assert question.text == body.strip()


@pytest.mark.parametrize("body", ["👍👍👍", "Пенсия 🙏 когда?", "Salem! Зейнетақы qashan?",
                                  "пенсия\x00\x07 когда\x1b", "\u200b\u200b"])
def test_odd_bodies_get_a_short_answer(phone: Phone, db, body: str) -> None:
    reply = phone.send(body)
    assert reply is not None and segments(reply).parts <= 3
    assert "\x00" not in reply
    for question in questions(db):
        assert question.text is not None and "\x00" not in question.text


def test_more_sends_the_rest_of_a_long_reply(app: Flask, phone: Phone,
                                             dialogue: SmsDialogue, db,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    long_help = " ".join(["Длинное объяснение про помощь."] * 20)
    monkeypatch.setitem(dialogue.content.prompts["ru"], "sms.help", long_help)
    phone.send("RU")
    hint = dialogue.text("ru", "sms.more_hint")
    sent: list[str] = []
    reply = phone.send("помощь")
    while reply is not None and reply.endswith(hint):
        assert segments(reply).parts <= 3
        sent.append(reply.removesuffix(hint).strip())
        reply = phone.send("ещё")
    assert reply is not None and segments(reply).parts <= 3
    sent.append(reply)
    assert len(sent) >= 2
    assert " ".join(sent) == long_help  # nothing lost, nothing repeated, words whole
    assert phone.send("ЕЩЁ") == dialogue.text("ru", "sms.nothing_more")


def test_many_messages_cannot_flood_the_queue(app: Flask, phone: Phone,
                                              dialogue: SmsDialogue, db) -> None:
    settings = runtime(app).settings
    limit, per_day = settings.sms_rate_limit, settings.sms_questions_per_day
    sent = [f"вопрос номер {i} про соседский забор" for i in range(limit + 5)]
    replies = [phone.send(text) for text in sent]
    assert replies[limit] == dialogue.rate_limited("ru")
    assert replies[limit + 1:] == [None] * 4
    asked = questions(db)
    assert len(asked) == per_day
    # Nothing is lost: past the day's questions and past the rate limit, each message is
    # added to the newest open question, where the lawyer reads it.
    assert [q.text for q in asked[:-1]] == sent[:per_day - 1]
    assert asked[-1].text == "\n\n".join(sent[per_day - 1:])
    # Until the rate limit, the resident is told the message reached the lawyers.
    assert set(replies[per_day:limit]) == {replies[0]}
    # A keyword, an emoji or a thanks past the limit is nobody's question: not added.
    for body in ("МЕНЮ", "1", "🙏", "Спасибо большое, жду звонка", "Рахмет 👍"):
        assert phone.send(body) is None
    assert questions(db)[-1].text == "\n\n".join(sent[per_day - 1:])


def test_past_the_limits_a_question_is_kept_even_when_none_is_open(
        app: Flask, phone: Phone, db) -> None:
    settings = runtime(app).settings
    for i in range(settings.sms_questions_per_day):
        phone.send(f"вопрос номер {i} про соседский забор")
    with db() as session:
        for question in session.scalars(select(Question)):
            question.status = "closed"
        session.commit()
    phone.send("ещё один вопрос про пенсию соседки")
    assert [q.text for q in questions(db) if q.status != "closed"] == [
        "ещё один вопрос про пенсию соседки"]


def test_an_opted_out_resident_is_sent_nothing_whatever_they_write(
        app: Flask, phone: Phone, dialogue: SmsDialogue, db) -> None:
    """Past the day's questions and past what one question holds, still not a word back."""
    assert phone.send("СТОП") == dialogue.text("ru", "sms.stop")
    settings = runtime(app).settings
    for i in range(settings.sms_questions_per_day + 3):
        assert phone.send(f"вопрос {i} про соседский забор " + "очень длинный " * 150) is None
    with db() as session:
        sent = session.scalars(select(SmsMessage).where(SmsMessage.direction == "out")).all()
    assert [m.body for m in sent] == [dialogue.text("ru", "sms.stop")]
    assert questions(db)  # what they wrote reached the lawyers


def test_unsigned_or_malformed_requests_write_nothing(twilio: Twilio, db) -> None:
    form = {"MessageSid": new_sid("SM"), "From": CALLER, "To": "+77000000000", "Body": "1"}
    assert twilio.post("/sms/incoming", form, signature="").status_code == 403
    assert twilio.post("/sms/incoming", form, signature="AAAA").status_code == 403
    assert twilio.post("/sms/incoming", {**form, "MessageSid": "SM../x"}).status_code == 400
    with db() as session:
        assert set(row_counts(session).values()) == {0}


@pytest.mark.parametrize("path", ["/sms/incoming", "/voice/incoming", "/sms/status"])
def test_a_host_the_signature_library_cannot_parse_is_refused_and_writes_nothing(
        app: Flask, db, path: str) -> None:
    """Without PUBLIC_BASE_URL the signature is checked for the request's own Host: one like
    "[1:2]" (an IPv6 literal to Werkzeug) made twilio's validator raise ValueError, which the
    SMS webhook's fallback took for a failure to answer and kept the message: a forged STOP
    opted a resident out, with no signature at all. Now: 403, nothing written."""
    rt = runtime(app)
    rt.settings = rt.settings.override(public_base_url="")
    form = {"MessageSid": new_sid("SM"), "CallSid": new_sid("CA"), "AccountSid": "AC" + "1" * 32,
            "From": "+77015550199", "To": "+77000000000", "Body": "STOP",
            "MessageStatus": "delivered"}
    # Straight to the WSGI app: Werkzeug's test client itself cannot take this Host apart.
    environ = EnvironBuilder(path=path, method="POST", data=form,
                             headers={"X-Twilio-Signature": "x"}).get_environ()
    environ["HTTP_HOST"] = "[1:2]"
    _body, status, _headers = run_wsgi_app(app.wsgi_app, environ)
    assert status.startswith("403")
    with db() as session:
        assert set(row_counts(session).values()) == {0}


def test_every_reply_is_stored_with_its_segments(phone: Phone, db) -> None:
    phone.send("1")
    with db() as session:
        out = session.scalars(select(SmsMessage).where(SmsMessage.direction == "out")).one()
        assert out.encoding == "UCS-2" and 1 <= (out.segments or 0) <= 3


def test_a_guess_is_not_remembered_as_the_callers_language(phone: Phone, twilio: Twilio,
                                                            db) -> None:
    from tests.support import call_form

    phone.send("1")
    assert caller_row(db).language is None
    root = ET.fromstring(twilio.post("/voice/incoming", call_form()).get_data(as_text=True))
    assert "node=language" in (root.find("Gather").get("action") or "")


def test_stop_works_even_past_the_rate_limit(app: Flask, phone: Phone, db) -> None:
    for i in range(runtime(app).settings.sms_rate_limit + 3):
        phone.send(f"сообщение {i}")
    assert phone.send("СТОП")
    assert caller_row(db).sms_opted_out


@pytest.fixture
def broken_dialogue(dialogue: SmsDialogue, monkeypatch: pytest.MonkeyPatch) -> SmsDialogue:
    """The SMS dialogue, failing on every message (the webhook's fallback answers)."""
    monkeypatch.setattr(dialogue, "reply", broken_reply)
    return dialogue


def broken_reply(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("matcher crashed")


def test_a_failure_while_answering_still_queues_the_message(
    app: Flask, phone: Phone, broken_dialogue: SmsDialogue, db
) -> None:
    dialogue = broken_dialogue
    reply = phone.send("Помогите с землёй, аким не отвечает")
    # In the message's language, as the dialogue would have answered.
    assert reply == dialogue.text("ru", "sms.question_received")
    [question] = questions(db)
    assert question.text == "Помогите с землёй, аким не отвечает" and question.channel == "sms"
    assert question.language == "ru"


def test_a_failure_while_answering_still_honours_stop_and_start(
    app: Flask, phone: Phone, broken_dialogue: SmsDialogue, db
) -> None:
    dialogue = broken_dialogue
    # Each answered in the message's language, as the dialogue would (else Kazakh).
    assert phone.send("СТОП") == dialogue.text("ru", "sms.stop")
    assert caller_row(db).sms_opted_out
    # Opted out: nothing is answered, as on the normal path; a question is kept for the
    # lawyers, a keyword is not.
    assert not phone.send("Жер туралы сұрақ")
    assert not phone.send("МЕНЮ")
    assert [q.text for q in questions(db)] == ["Жер туралы сұрақ"]
    assert phone.send("Start") == dialogue.text("kk", "sms.start")
    assert not caller_row(db).sms_opted_out
    # A keyword or a menu key is nobody's question: the menu, to try again.
    assert phone.send("МЕНЮ") == dialogue.text("ru", "sms.menu")
    assert phone.send("2") == dialogue.text("kk", "sms.menu")
    assert len(questions(db)) == 1


def test_a_failure_while_answering_reads_thanks_as_the_dialogue_does(
    app: Flask, phone: Phone, dialogue: SmsDialogue, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thanks gets no answer and makes no question, an emoji gets the menu; "I'll wait for
    the call" is a thanks while a question waits, and a question once it is closed."""
    phone.send("Сосед перекрыл мне воду, а аким не отвечает")  # their question, queued
    monkeypatch.setattr(dialogue, "reply", broken_reply)
    assert phone.send("Спасибо,жду звонка 🙏") is None
    assert phone.send("🙏") == dialogue.text("ru", "sms.menu")
    assert len(questions(db)) == 1
    with db() as session:
        session.scalars(select(Question)).one().status = "closed"
    assert phone.send("Хорошо, жду звонка") == dialogue.text("ru", "sms.question_received")
    assert [q.text for q in questions(db)][-1] == "Хорошо, жду звонка"


def test_a_failure_while_answering_reads_basta_in_the_residents_language(
    app: Flask, phone: Phone, dialogue: SmsDialogue, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    phone.send("МЕНЮ")  # a Russian speaker
    monkeypatch.setattr(dialogue, "reply", broken_reply)
    assert phone.send("баста") == dialogue.text("ru", "sms.stop")
    assert caller_row(db).sms_opted_out
