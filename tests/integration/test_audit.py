"""The audit log page: coordinators only, newest first, filters, paging; what the question page
writes into it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import select

from storage import audit
from storage.models import CHANNEL_VOICE, AuditEvent, Question, User
from tests.workspace_support import Browser, Db, page

AT = datetime(2026, 3, 2, 4, 30, tzinfo=UTC)  # 09:30 in Almaty


def _user_id(db: Db, email: str) -> int:
    with db() as session:
        return session.scalars(select(User.id).where(User.email == email)).one()


def _question(db: Db) -> int:
    with db() as session:
        question = Question(channel=CHANNEL_VOICE, language="ru", topic="pension")
        session.add(question)
        session.flush()
        return question.id


def _logged_in(app: Flask, email: str) -> Browser:
    browser = Browser(app)
    assert browser.login(email).status_code == 302
    return browser


def test_a_logged_out_visitor_is_sent_to_login(app: Flask) -> None:
    response = Browser(app).get("/admin/audit")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"


def test_a_consultant_cannot_read_the_audit_log(app: Flask, consultant: str) -> None:
    browser = _logged_in(app, consultant)
    response = browser.get("/admin/audit")
    assert response.status_code == 403
    assert page(response).headings == ["No access"]
    assert "/admin/audit" not in page(browser.get("/queue")).links


def test_a_coordinator_reads_the_log_newest_first(app: Flask, db: Db, consultant: str,
                                                 coordinator: str) -> None:
    lawyer_id = _user_id(db, consultant)
    first, second = _question(db), _question(db)
    with db() as session:
        audit.record(session, lawyer_id, audit.OPENED, first, at=AT)
        audit.record(session, lawyer_id, audit.CHANGED, first, at=AT + timedelta(minutes=1),
                     fields=["region", "urgent", "corrected_text"],
                     values={"region": "akmola", "urgent": True})
        audit.record(session, lawyer_id, audit.CLOSED, second, at=AT + timedelta(minutes=2),
                     reason="wrong_number")
        audit.record(session, None, audit.SMS_SENT, second, at=AT + timedelta(minutes=3),
                     segments=2)
    browser = _logged_in(app, coordinator)
    response = browser.get("/admin/audit")
    assert response.status_code == 200
    parsed = page(response)
    assert parsed.headings == ["Audit log"]
    assert "/admin/audit" in parsed.links
    header, *rows = parsed.rows
    assert header == ["Time (Almaty)", "User", "Action", "Question", "Detail"]
    assert rows == [
        ["2026-03-02 09:33", "the system", "sent an SMS", str(second), "SMS parts: 2"],
        ["2026-03-02 09:32", "Aigerim Nurlanovna", "closed the question", str(second),
         "reason: Wrong number"],
        ["2026-03-02 09:31", "Aigerim Nurlanovna", "changed", str(first),
         "fields: region, urgent, corrected transcript; region → Akmola Region; urgent → yes"],
        ["2026-03-02 09:30", "Aigerim Nurlanovna", "opened", str(first), "—"],
        # The two accounts, made with `hotline users add` before the events above were added.
        *[[r[0], "the system", "changed an account", "—",
           f"account: {email}; created; role → {role}; on the server's command line"]
          for r, email, role in zip(rows[4:], (coordinator, consultant),
                                    ("coordinator", "consultant"), strict=True)],
    ]
    assert f"/questions/{first}" in parsed.links
    _, *russian = page(browser.get("/admin/audit?lang=ru")).rows
    assert russian[2] == ["2026-03-02 09:31", "Aigerim Nurlanovna", "изменил(а)", str(first),
                          "поля: регион, срочно, исправленный текст; регион → "
                          "Акмолинская область; срочно → да"]


def test_filters_by_question_user_and_action(app: Flask, db: Db, consultant: str,
                                             coordinator: str) -> None:
    lawyer_id, boss_id = _user_id(db, consultant), _user_id(db, coordinator)
    first, second = _question(db), _question(db)
    with db() as session:
        audit.record(session, lawyer_id, audit.OPENED, first, at=AT)
        audit.record(session, lawyer_id, audit.LISTENED, first, at=AT)
        audit.record(session, boss_id, audit.OPENED, second, at=AT)
        audit.record(session, lawyer_id, audit.OPENED, second, at=AT)
    browser = _logged_in(app, coordinator)

    def shown(query: dict[str, str]) -> list[tuple[str, str, str]]:
        _, *rows = page(browser.get("/admin/audit", query_string=query)).rows
        return [(r[1], r[2], r[3]) for r in rows]

    lawyer, boss = "Aigerim Nurlanovna", "Dana Coordinator"
    assert shown({"question": str(first)}) == [(lawyer, "listened", str(first)),
                                               (lawyer, "opened", str(first))]
    assert shown({"question": f"#{second}"}) == [(lawyer, "opened", str(second)),
                                                 (boss, "opened", str(second))]
    assert shown({"user": str(boss_id)}) == [(boss, "opened", str(second))]
    assert shown({"action": "listened"}) == [(lawyer, "listened", str(first))]
    assert shown({"user": str(lawyer_id), "action": "opened", "question": str(second)}) == [
        (lawyer, "opened", str(second))]
    # Nonsense filters are ignored rather than failing: every event is shown (the 4 above and
    # the 2 accounts made with `hotline users add`).
    assert len(shown({"action": "deleted", "question": "abc"})) == 4 + 2
    # Numbers no id can be are ignored too (PostgreSQL refused them in the query: a 500).
    for name in ("question", "user", "before"):
        assert len(shown({name: "99999999999"})) == 4 + 2
    filtered = browser.get("/admin/audit", query_string={"user": str(boss_id)})
    html = filtered.get_data(as_text=True)
    assert f'<option value="{boss_id}" selected>' in html


def test_paging_back_through_older_events(app: Flask, db: Db, consultant: str,
                                          coordinator: str) -> None:
    lawyer_id = _user_id(db, consultant)
    question_id = _question(db)
    with db() as session:
        for minute in range(60):
            audit.record(session, lawyer_id, audit.OPENED, question_id,
                         at=AT + timedelta(minutes=minute))
    browser = _logged_in(app, coordinator)
    first = page(browser.get("/admin/audit", query_string={"question": str(question_id)}))
    _, *rows = first.rows
    assert len(rows) == 50
    assert rows[0][0] == "2026-03-02 10:29" and rows[-1][0] == "2026-03-02 09:40"
    # (the language links keep the query too: not the older page)
    older = [link for link in first.links if "before=" in link and "lang=" not in link]
    assert len(older) == 1 and f"question={question_id}" in older[0]
    second = page(browser.get(older[0]))
    _, *rest = second.rows
    assert [r[0] for r in rest] == [f"2026-03-02 09:{m:02d}" for m in range(39, 29, -1)]
    assert not [link for link in second.links if "before=" in link and "lang=" not in link]


def test_what_a_consultant_does_on_a_question_reaches_the_log(
        app: Flask, db: Db, consultant: str, coordinator: str) -> None:
    question_id = _question(db)
    lawyer = _logged_in(app, consultant)
    token = lawyer.token("/queue")
    lawyer.get(f"/questions/{question_id}")
    lawyer.post(f"/questions/{question_id}/claim", {"csrf_token": token})
    lawyer.post(f"/questions/{question_id}/notes", {"csrf_token": token, "body": "Перезвонить"})
    lawyer.post(f"/questions/{question_id}/tags",
                {"csrf_token": token, "topic": "pension", "region": "turkistan"})
    lawyer.post(f"/questions/{question_id}/close", {"csrf_token": token, "reason": "test_call"})
    with db() as session:
        actions = list(session.scalars(select(AuditEvent.action)
                                       .where(AuditEvent.question_id == question_id)
                                       .order_by(AuditEvent.id)))
    assert [a for a in actions if a != audit.CLAIMED] == [
        audit.OPENED, audit.NOTED, audit.CHANGED, audit.CLOSED]
    browser = _logged_in(app, coordinator)
    _, *rows = page(browser.get("/admin/audit", query_string={"question": str(question_id)})).rows
    # (Claiming is recorded by the queue's claim route.)
    assert [r[2] for r in rows if r[2] != "took the question"] == [
        "closed the question", "changed", "added a note", "opened"]
    assert [r[4] for r in rows if r[2] == "added a note"] == ["note 1; 11 characters"]
    assert "Перезвонить" not in browser.get("/admin/audit").get_data(as_text=True)


def test_the_callback_details_are_shown_in_words(app: Flask, db: Db, consultant: str,
                                                 coordinator: str) -> None:
    # The details as hotline.callbacks writes them: times in UTC, ISO 8601.
    lawyer_id = _user_id(db, consultant)
    question_id = _question(db)
    planned = AT + timedelta(hours=2)  # 11:30 in Almaty
    with db() as session:
        def add(action: str, minute: int, **detail: Any) -> None:
            audit.record(session, lawyer_id, action, question_id, at=AT + timedelta(minutes=minute),
                         **detail)

        add(audit.CALLED, 0, attempt_id=7, retry_planned_for=None)
        add(audit.OUTCOME, 1, outcome="no_answer", attempt_id=7, failed_attempts=1,
            next_callback_at=planned.isoformat())
        add(audit.CALLED, 2, attempt_id=8, retry_planned_for=planned.isoformat())
        add(audit.OUTCOME, 3, outcome="follow_up", attempt_id=8, failed_attempts=1,
            referral="Акимат района")
        add(audit.OUTCOME, 4, outcome="no_answer", attempt_id=9, failed_attempts=3)
        add(audit.CLOSED, 4, reason="no_answer")
        add(audit.SMS_SENT, 4, message_id=5, automatic=True, segments=1)
        add(audit.SMS_SENT, 5, message_id=6, segments=2, encoding="UCS-2")
        add(audit.OPENED, 6, mystery=1)
    browser = _logged_in(app, coordinator)

    def details(language: str) -> list[str]:
        _, *rows = page(browser.get("/admin/audit", query_string={
            "question": str(question_id), "lang": language})).rows
        return [row[4] for row in reversed(rows)]

    assert details("en") == [
        "call attempt 7",
        "outcome: No answer; call attempt 7; failed attempts: 1; "
        "next try after 2026-03-02 11:30 (Almaty)",
        "call attempt 8; called before the try planned for 2026-03-02 11:30 (Almaty)",
        "outcome: Needs follow-up (referred to an organisation); call attempt 8; "
        "failed attempts: 1; referred to: Акимат района",
        "outcome: No answer; call attempt 9; failed attempts: 3",
        "reason: No answer",
        "SMS 5; sent automatically; SMS parts: 1",
        "SMS 6; SMS parts: 2; encoding: UCS-2",
        "mystery: 1",  # a detail the page does not know is shown as stored
    ]
    russian = details("ru")
    assert russian[1] == ("итог: Нет ответа; попытка звонка 7; неудачных попыток: 1; "
                          "следующая попытка после 2026-03-02 11:30 (Алматы)")
    assert russian[2] == ("попытка звонка 8; позвонил(а) раньше попытки, запланированной на "
                          "2026-03-02 11:30 (Алматы)")
    assert russian[6] == "SMS 5; отправлено автоматически; частей SMS: 1"
    kazakh = details("kk")
    assert kazakh[1].startswith("нәтиже: ")
    assert "келесі әрекет 2026-03-02 11:30 уақытынан кейін" in kazakh[1]
    assert kazakh[6] == "SMS 5; автоматты түрде жіберілді; SMS бөліктері: 1"


def test_a_lapsed_claim_taken_over_is_in_the_log(app: Flask, db: Db, consultant: str,
                                                 coordinator: str) -> None:
    """Aigerim took a question and left it idle; Dana takes it over: the log says, by the
    system, whose claim lapsed, then who took it, in each language."""
    question_id = _question(db)
    aigerim = _logged_in(app, consultant)
    aigerim.post(f"/questions/{question_id}/claim", {"csrf_token": aigerim.token("/queue")})
    with db() as session:  # idle for longer than HOTLINE_CLAIM_IDLE_MINUTES
        question = session.get(Question, question_id)
        assert question is not None and question.claimed_by is not None
        question.claim_touched_at = AT
    dana = _logged_in(app, coordinator)
    taken = dana.post(f"/questions/{question_id}/claim", {"csrf_token": dana.token("/queue")})
    assert taken.status_code == 303

    def rows(language: str) -> list[list[str]]:
        _, *shown = page(dana.get("/admin/audit", query_string={
            "question": str(question_id), "lang": language})).rows
        return [[row[1], row[2], row[4]] for row in reversed(shown)]

    assert rows("en")[-2:] == [
        ["the system", "released", "Aigerim Nurlanovna's claim lapsed: left idle"],
        ["Dana Coordinator", "took the question", "—"]]
    assert rows("ru")[-2][2] == "Aigerim Nurlanovna не работал(а) с вопросом: время истекло"
    assert rows("kk")[-2][2] == "Aigerim Nurlanovna сұрақпен жұмыс істемеді: уақыты өтті"
