"""Outbound SMS through Twilio's REST API, and the delivery status callbacks Twilio posts back.

A message to send is a row (`storage.sms.queue_outbound`, status ``queued``, no MessageSid);
a job calls `send_sms`, which only ever moves that row forward:

- The job first *claims* the row with one conditional UPDATE (``queued`` and no MessageSid, or
  ``sending`` without a MessageSid for longer than ``HOTLINE_STALE_SECONDS``: a dead worker's)
  and commits ``sending`` before it talks to Twilio. Of two jobs for one message one wins; a
  job that runs again after success finds the MessageSid and sends nothing.
- A caller who opted out (STOP) is never sent anything: the message is marked ``failed``.
  (The one confirmation of STOP is the inbound webhook's TwiML reply, not a queued message.)
- Twilio 21610 (the recipient has unsubscribed at the carrier or at Twilio): the caller is
  marked opted out and the message ``failed`` with that code. Other 4xx: ``failed`` with
  Twilio's code and message, for good. 5xx, 429 and network errors: the row goes back to
  ``queued`` and `SmsRetry` is raised for the job queue to try again later.
- A worker killed after Twilio accepted the message but before the MessageSid was stored can
  leave a stale ``sending`` row that is sent again: Twilio has no idempotency key for
  messages, so a rare duplicate is preferred to a lost answer.

Status callbacks (``POST /sms/status``) need an absolute URL that Twilio can reach: it is
``PUBLIC_BASE_URL`` + ``/sms/status``. Without ``PUBLIC_BASE_URL`` (a job has no request to take
a host from) messages are sent without a status callback and stay at Twilio's first status.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from flask import Blueprint, Response, abort, request
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from hotline import logs
from hotline.config import LOCAL_TIME, Settings
from hotline.receipts import RECEIPT_NIGHT_DELAY, too_late
from hotline.runtime import Runtime
from hotline.twilio_glue import form_int, form_sid, runtime, twilio_webhook
from storage import sms
from storage.callbacks import reopen_unanswered, within_hours
from storage.calls import touch_caller
from storage.db import retry_conflicts, unit_of_work
from storage.models import (
    SMS_FAILED,
    SMS_FINAL_STATUSES,
    SMS_OUT,
    SMS_QUEUED,
    SMS_RECEIPT,
    SMS_SENDING,
    TWILIO_OPTED_OUT,
    Caller,
    Question,
    SmsMessage,
)
from storage.utc import ensure_utc

log = logging.getLogger(__name__)

bp = Blueprint("sms_status", __name__)

STATUS_PATH = "/sms/status"
MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
MESSAGE_STATUS = re.compile(r"^[a-z][a-z_-]{0,19}$")
REST_TIMEOUT = 30.0
# Statuses worth another try; every other 4xx is final for this message.
RETRY_HTTP_STATUSES = frozenset({408, 409, 425, 429})
# A message that could not be sent for this long is given up by the sweep: an answer that
# arrives days late confuses more than it helps.
MAX_SEND_AGE = timedelta(hours=24)

# Twilio's MessageStatus values in the order they happen. A callback only moves a message to a
# later rank, so late or repeated callbacks ("sent" after "delivered") change nothing, and a
# final status is never replaced by another one of the same rank.
_STATUS_RANK = {
    "accepted": 0, "scheduled": 0, "queued": 1, "sending": 2, "sent": 3,
    "partially_delivered": 3, "delivered": 4, "undelivered": 4, "failed": 4, "canceled": 4,
    "read": 5,
}
_UNKNOWN_RANK = 3  # a status Twilio may add later: past "sent", but not final


class SmsRetry(Exception):
    """A passing failure (Twilio 5xx or 429, network): the message is queued again."""


def _rank(status: str) -> int:
    return _STATUS_RANK.get(status, _UNKNOWN_RANK)


def make_twilio_client(settings: Settings, timeout: float = REST_TIMEOUT) -> Client:
    """Return a REST client with the account's credentials on TWILIO_API_URL.

    The Api domain's base URL is replaced, so requests still go through the client's own
    HTTP layer (TwilioHttpClient on requests), only to another host. Its log of each request
    (URL and query, at INFO) has the residents' numbers cut (hotline.logs.MaskNumbers).
    """
    logs.mask_twilio_numbers()
    client = Client(settings.twilio_account_sid, settings.twilio_auth_token,
                    http_client=TwilioHttpClient(timeout=timeout))
    client.api.base_url = settings.twilio_api_url.rstrip("/")
    return client


def close_twilio_client(client: Client) -> None:
    """Close the connections make_twilio_client's client opened (its requests session)."""
    if client.http_client.session is not None:
        client.http_client.session.close()


def status_callback_url(settings: Settings) -> str | None:
    """The absolute URL of the status callback, or None without PUBLIC_BASE_URL."""
    if not settings.public_base_url:
        return None
    return settings.public_base_url.rstrip("/") + STATUS_PATH


def _caller_of(
    session: Session, message: SmsMessage, *, create: bool, now: datetime
) -> Caller | None:
    """The message's caller: linked, or found by phone (created when asked to, for opt-outs)."""
    if message.caller_id is not None:
        return session.get(Caller, message.caller_id)
    caller = session.scalars(select(Caller).where(Caller.phone == message.phone)).one_or_none()
    if caller is None and create:
        try:
            caller = touch_caller(session, message.phone, now)
        except ValueError:
            return None  # not an E.164 number: nobody to remember the opt-out for
    if caller is not None and message.caller_id is None:
        message.caller_id = caller.id
    return caller


def _opt_out(session: Session, message: SmsMessage, now: datetime, key: bytes) -> None:
    caller = _caller_of(session, message, create=True, now=now)
    if caller is not None and not caller.sms_opted_out:
        sms.set_opted_out(session, caller, True, now, key=key)
        log.info("caller %s opted out of SMS (Twilio %s)", caller.id, TWILIO_OPTED_OUT)


def _claim(session: Session, message_id: int, now: datetime, stale_before: datetime) -> bool:
    """Mark the message sending if it waits to be sent (or a dead worker's); return if won."""
    claimable = and_(
        SmsMessage.id == message_id,
        SmsMessage.direction == SMS_OUT,
        SmsMessage.message_sid.is_(None),
        or_(SmsMessage.status == SMS_QUEUED,
            and_(SmsMessage.status == SMS_SENDING, SmsMessage.updated_at < stale_before)),
    )
    result = session.execute(
        update(SmsMessage).where(claimable).values(status=SMS_SENDING, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def _not_delivered(session: Session, message: SmsMessage, now: datetime) -> None:
    """After a message ended failed or undelivered: a consultant's answer on a question closed
    as resolved puts the question back in the queue (storage.callbacks.reopen_unanswered)."""
    reopened = reopen_unanswered(session, message, now)
    if reopened is not None:
        log.info("question %s is back in the queue: its SMS answer %s did not reach the "
                 "resident (%s)", reopened, message.id, message.status)


def _finish(runtime: Runtime, message_id: int, **values: Any) -> str:
    """Record the outcome of our own sending attempt on the row we claimed."""
    values["updated_at"] = datetime.now(UTC)
    with unit_of_work(runtime.sessions) as session:
        message = session.get(SmsMessage, message_id)
        assert message is not None
        if message.message_sid is not None or message.status != SMS_SENDING:
            # A stale claim was taken over by another worker meanwhile; its outcome stands.
            log.warning("SMS %s: outcome %s not stored, the row moved on to %s", message_id,
                        values.get("status"), message.status)
            return message.status
        for name, value in values.items():
            setattr(message, name, value)
        if values.get("message_sid") and message.status not in FINAL_STATUSES:
            # Twilio has it: if its news does not come, the sweep asks (reconcile_statuses).
            message.status_check_at = values["updated_at"] + RECONCILE_AFTER
        if values.get("error_code") == TWILIO_OPTED_OUT:
            _opt_out(session, message, values["updated_at"], runtime.pseudonym_key)
        _not_delivered(session, message, values["updated_at"])
        return message.status


def send_sms(runtime: Runtime, message_id: int) -> str:
    """Send one queued message through Twilio once; return its status afterwards.

    Raises SmsRetry (after putting the message back to ``queued``) when another try later
    may succeed.
    """
    settings = runtime.settings
    now = datetime.now(UTC)
    with unit_of_work(runtime.sessions) as session:
        stale_before = now - timedelta(seconds=settings.stale_seconds)
        before = session.execute(select(SmsMessage.status, SmsMessage.error_message)
                                 .where(SmsMessage.id == message_id)).one_or_none()
        claimed = _claim(session, message_id, now, stale_before)
        message = session.get(SmsMessage, message_id)
        if message is None:
            log.error("SMS %s does not exist", message_id)
            return "missing"
        if not claimed:
            # Sent already, final, or another worker is sending it right now.
            return message.status
        # An earlier try may have reached Twilio without its answer being stored: a worker
        # that died after the POST (the row left "sending"), or an error after it (a timeout
        # reading the answer, a 5xx), retried. Twilio is asked first (_sent_before).
        tried_before = before is not None and (before.status == SMS_SENDING
                                               or before.error_message is not None)
        created_at = message.created_at
        caller = _caller_of(session, message, create=False, now=now)
        if sms.opted_out(session, caller, runtime.pseudonym_key, phone=message.phone):
            message.status = SMS_FAILED
            message.error_message = "not sent: the resident opted out of SMS (STOP)"
            message.updated_at = now
            _not_delivered(session, message, now)
            log.info("SMS %s not sent: caller %s opted out", message_id,
                     caller.id if caller else "(pseudonymised)")
            return message.status
        late = _late(session, runtime, message, now)
        if late is not None:
            give_up, why = late
            message.status = SMS_FAILED if give_up else SMS_QUEUED
            message.error_message = why
            message.updated_at = now
            if give_up:
                _not_delivered(session, message, now)
            log.info("SMS %s not sent now: %s", message_id, why)
            return message.status
        to, body = message.phone, message.body

    params: dict[str, Any] = {"to": to, "from_": settings.twilio_phone_number, "body": body}
    callback = status_callback_url(settings)
    if callback:
        params["status_callback"] = callback
    client = make_twilio_client(settings)
    try:
        earlier = (_sent_before(runtime, client, message_id, to, settings.twilio_phone_number,
                                body, created_at) if tried_before else None)
        if earlier is not None:
            log.info("SMS %s: Twilio has it already (%s), from an earlier try: not sent again",
                     message_id, earlier.sid)
            return _finish(runtime, message_id, message_sid=str(earlier.sid),
                           status=str(earlier.status or SMS_QUEUED), error_code=None,
                           error_message=None)
        sent = client.messages.create(**params)
    except (TwilioRestException, TwilioServiceException) as exc:
        status, code = int(exc.status), exc.code
        text = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
        if status >= 500 or status in RETRY_HTTP_STATUSES:
            _finish(runtime, message_id, status=SMS_QUEUED, error_code=code,
                    error_message=f"will retry: HTTP {status}: {text}")
            raise SmsRetry(f"Twilio answered HTTP {status} for SMS {message_id}") from exc
        # Not Twilio's text: it can carry the resident's number (no full numbers in logs).
        log.warning("SMS %s refused by Twilio: HTTP %s, code %s", message_id, status, code)
        return _finish(runtime, message_id, status=SMS_FAILED, error_code=code,
                       error_message=str(text))
    except requests.RequestException as exc:
        _finish(runtime, message_id, status=SMS_QUEUED, error_code=None,
                error_message=f"will retry: {type(exc).__name__}: {exc}")
        raise SmsRetry(f"Twilio not reached for SMS {message_id}: {exc}") from exc
    finally:
        close_twilio_client(client)
    return _finish(runtime, message_id, message_sid=str(sent.sid),
                   status=str(sent.status or SMS_QUEUED), error_code=None, error_message=None)


# A send retried this long after the message was written (Twilio down, a worker outage) is
# late: outside the calling hours it waits for the morning (or, a receipt, is given up).
LATE_AFTER = RECEIPT_NIGHT_DELAY
WAITING_FOR_MORNING = "waiting for the calling hours: not sent at night"


def _late(session: Session, runtime: Runtime, message: SmsMessage,
          now: datetime) -> tuple[bool, str] | None:
    """Why the message should not go now: (give it up, why), or None to send it.

    A receipt is checked again as when it was queued (receipts.too_late: the question
    closed, the call too long ago, the night come): then it is given up. Any other message
    (a lawyer's answer, the "we tried" SMS) that is sent late, outside the calling hours,
    waits for the morning: the sweep sends it then. Sent at once, as written, it goes at any
    hour (evening volunteers answer SMS questions after the calling hours)."""
    if message.purpose == SMS_RECEIPT:
        question = session.get(Question, message.question_id) if message.question_id else None
        late = too_late(runtime, question, now) if question is not None else None
        return (True, f"not sent: the receipt came too late ({late})") if late else None
    if (now - ensure_utc(message.created_at) > LATE_AFTER
            and not within_hours(now, runtime.settings.callback_hours, LOCAL_TIME)):
        return False, WAITING_FOR_MORNING
    return None


# How far back, before the row was made, a message Twilio lists may have been created (clocks).
CLOCK_SKEW = timedelta(minutes=5)


def _sent_before(runtime: Runtime, client: Client, message_id: int, to: str, from_: str,
                 body: str, created_at: datetime) -> Any:
    """The message Twilio already has for this row, from an earlier try whose answer was not
    stored, or None: one to the same number, from ours, with the same text, created since the
    row was (the resident's newest first; a resident gets few), and whose SID no row of ours
    holds. The same text sent to them on purpose before (the same answer again) is another
    row's: its SID is stored there, or it was created before this row.

    When Twilio cannot be asked, None: sending again risks a duplicate, not sending risks no
    SMS at all; the duplicate is the smaller harm.
    """
    try:
        listed = client.messages.list(to=to, from_=from_, limit=20)
    except (TwilioRestException, TwilioServiceException, requests.RequestException) as exc:
        log.warning("SMS %s: could not ask Twilio whether an earlier try sent it (%s); "
                    "sending", message_id, type(exc).__name__)
        return None
    since = created_at - CLOCK_SKEW
    candidates = [earlier for earlier in listed if earlier.body == body and (
        earlier.date_created is None or earlier.date_created >= since)]
    if not candidates:
        return None
    with unit_of_work(runtime.sessions, read_only=True) as session:
        stored = set(session.scalars(select(SmsMessage.message_sid).where(
            SmsMessage.message_sid.in_([str(c.sid) for c in candidates]))))
    return next((c for c in candidates if str(c.sid) not in stored), None)


def messages_to_send(runtime: Runtime) -> list[int]:
    """Ids of outbound messages a lost job or a dead worker left unsent, for the sweep.

    A message waiting longer than MAX_SEND_AGE is given up (``failed``) instead.
    """
    now = datetime.now(UTC)
    stale_before = now - timedelta(seconds=runtime.settings.stale_seconds)
    with unit_of_work(runtime.sessions) as session:
        waiting = session.scalars(
            select(SmsMessage).where(
                SmsMessage.direction == SMS_OUT,
                SmsMessage.message_sid.is_(None),
                SmsMessage.status.in_((SMS_QUEUED, SMS_SENDING)),
                SmsMessage.updated_at < stale_before,
            ).order_by(SmsMessage.id)
        ).all()
        ids = []
        for message in waiting:
            if message.created_at < now - MAX_SEND_AGE:
                message.status = SMS_FAILED
                hours = MAX_SEND_AGE.total_seconds() / 3600
                message.error_message = (f"not sent within {hours:g} hours, given up "
                                         f"(last error: {message.error_message or 'none'})")
                message.updated_at = now
                log.warning("SMS %s given up: not sent within %s", message.id, MAX_SEND_AGE)
                _not_delivered(session, message, now)
            else:
                ids.append(message.id)
        return ids


# Outbound messages whose delivery Twilio has not reported are asked about (GET the message):
# a status callback Twilio sent before the job stored the message's SID was dropped (no row
# had the SID yet), or never came (a network fault, no PUBLIC_BASE_URL); Twilio does not send
# it again. SmsMessage.status_check_at says when: RECONCILE_AFTER after the message was sent,
# then at doubling intervals, RECONCILE_CHECKS times in all (the last about 64 hours after
# the sending); final news, by
# a callback or an answer, ends it. At most RECONCILE_PER_SWEEP a sweep, each claimed first
# (two workers do not both ask), with a short timeout; a Twilio that does not answer well (a
# network fault, 429, 5xx) ends the round. Many carriers never report "delivered": such a
# message ends "sent".
RECONCILE_AFTER = timedelta(minutes=15)
RECONCILE_CHECKS = 8
RECONCILE_PER_SWEEP = 20
RECONCILE_TIMEOUT = 5.0
# A claimed message waits this long before another sweep may ask about it: longer than one
# round can take (RECONCILE_PER_SWEEP questions of RECONCILE_TIMEOUT each). A round that
# ends early (Twilio not reached) leaves the rest to be asked when it has passed.
RECONCILE_LEASE = timedelta(minutes=5)
FINAL_STATUSES = SMS_FINAL_STATUSES | {"canceled"}


def _next_check(checks: int, now: datetime) -> datetime | None:
    """When to ask next after `checks` questions (None: no more)."""
    if checks >= RECONCILE_CHECKS:
        return None
    return now + RECONCILE_AFTER * (1 << checks)


def reconcile_statuses(runtime: Runtime, now: datetime | None = None) -> int:
    """Ask Twilio how the messages due a question (status_check_at) are doing, and apply what
    it says as a status callback would (record_status: forward only; a failed or undelivered
    answer may put its question back in the queue). Return how many were asked about. For
    the sweep; nothing without an account SID."""
    settings = runtime.settings
    if not settings.twilio_account_sid:
        return 0
    now = now or datetime.now(UTC)
    claimed: list[tuple[int, str]] = []
    with unit_of_work(runtime.sessions) as session:
        due = session.execute(
            select(SmsMessage.id, SmsMessage.message_sid)
            .where(SmsMessage.status_check_at <= now)
            .order_by(SmsMessage.status_check_at).limit(RECONCILE_PER_SWEEP)).all()
        for row in due:
            # Claimed for RECONCILE_LEASE: another worker's sweep at the same moment finds it
            # no longer due and leaves it. The check is counted once Twilio has answered.
            won = session.execute(
                update(SmsMessage)
                .where(SmsMessage.id == row.id, SmsMessage.status_check_at <= now)
                .values(status_check_at=now + RECONCILE_LEASE)
                .execution_options(synchronize_session=False))
            if getattr(won, "rowcount", 0) == 1 and row.message_sid:
                claimed.append((row.id, str(row.message_sid)))
    if not claimed:
        return 0
    client = make_twilio_client(settings, timeout=RECONCILE_TIMEOUT)
    asked = 0
    try:
        for message_id, sid in claimed:
            found: Any = None
            try:
                found = client.messages(sid).fetch()
            except TwilioRestException as exc:
                if exc.status >= 500 or exc.status in RETRY_HTTP_STATUSES:
                    log.warning("SMS statuses not asked now: Twilio answered HTTP %s",
                                exc.status)
                    break
                # Twilio does not know it (404) or refuses (4xx): an answer all the same.
                log.warning("SMS %s: Twilio answered HTTP %s about its status", message_id,
                            exc.status)
            except requests.RequestException as exc:
                log.warning("SMS statuses not asked now: Twilio not reached (%s)",
                            type(exc).__name__)
                break
            asked += 1
            with unit_of_work(runtime.sessions) as session:
                message = session.scalars(select(SmsMessage).where(SmsMessage.id == message_id)
                                          .with_for_update()).one_or_none()
                if message is None:
                    continue
                message.status_checks += 1
                message.status_check_at = _next_check(message.status_checks, now)
                if found is not None and found.status:
                    code = int(found.error_code) if found.error_code is not None else None
                    record_status(session, message, str(found.status), code, now,
                                  runtime.pseudonym_key)
    finally:
        close_twilio_client(client)
    return asked


def record_status(
    session: Session, message: SmsMessage, status: str, error_code: int | None, now: datetime,
    key: bytes,
) -> None:
    """Apply a delivery status callback: only forward, and opt out on Twilio 21610. The
    callback that makes it failed or undelivered (only that one: Twilio repeats them) may
    put its question back in the queue (_not_delivered)."""
    if _rank(status) > _rank(message.status):
        message.status = status
        if error_code is not None:
            message.error_code = error_code
        message.updated_at = now
        if status in FINAL_STATUSES:
            message.status_check_at = None  # final news: nothing more to ask Twilio
        _not_delivered(session, message, now)
    elif error_code is not None and message.error_code is None:
        message.error_code = error_code
        message.updated_at = now
    if error_code == TWILIO_OPTED_OUT:
        _opt_out(session, message, now, key)


@bp.post(STATUS_PATH)
@twilio_webhook
@retry_conflicts
def status() -> Response:
    """Twilio reports how an outbound message is doing (queued, sent, delivered, failed…).

    A malformed MessageSid or MessageStatus gets 400. A well-formed MessageSid we do not know
    gets 204 and changes nothing: it is no message of ours to track (or Twilio called back
    before the job stored the SID: a later status, or the sweep's question to Twilio,
    reconcile_statuses, brings it up to date).
    """
    message_sid = form_sid("MessageSid", MESSAGE_SID)
    message_status = request.form.get("MessageStatus", "").strip().lower()
    if not MESSAGE_STATUS.fullmatch(message_status):
        abort(400, description="MessageStatus is missing or malformed")
    error_code = form_int("ErrorCode")
    now = datetime.now(UTC)
    with unit_of_work(runtime().sessions) as session:
        # Locked, so two callbacks for one message at once apply one after the other.
        message = session.scalars(
            select(SmsMessage).where(SmsMessage.message_sid == message_sid).with_for_update()
        ).one_or_none()
        if message is None or message.direction != SMS_OUT:
            log.info("status %r for unknown message %s ignored", message_status, message_sid)
            return Response(status=204)
        record_status(session, message, message_status, error_code, now,
                      runtime().pseudonym_key)
    return Response(status=204)

