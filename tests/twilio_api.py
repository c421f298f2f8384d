"""A local stand-in for Twilio's REST API: the Messages and Calls resources on 127.0.0.1.

The app talks to it through the twilio client's own HTTP layer (TWILIO_API_URL points here).
It checks the account's login, records every request, and answers like Twilio: 201 with the
resource's JSON (an SM or CA sid), or an error scripted with fail_next. It lists the messages
it accepted (GET Messages.json, by To and From, newest first) and shows one (GET
Messages/SM….json: as it is now; a test changes its "status" as Twilio would). It also lists the
account's recordings (GET Recordings.json, by page, newest first, with Twilio's DateCreated>
filter) and shows a call (GET Calls/CA….json), from what a test put there with add_recording
and add_call, and deletes a recording (DELETE Recordings/RE….json: 204, or 404 when it has none);
fail_next scripts errors for those too (RECORDINGS, CALL_RECORDS, RECORDING_DELETE,
MESSAGE_RECORDS).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from flows.segments import segments

RESOURCE_PATH = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>AC[0-9a-f]{32})/(?P<resource>Messages|Calls)\.json$")
# Fields Twilio takes more than once (each event in a parameter of its own).
REPEATABLE = frozenset({"StatusCallbackEvent"})
MESSAGES, CALLS, RECORDINGS = "Messages", "Calls", "Recordings"
CALL_RECORDS = "Calls/<sid>"  # fail_next's name for GET Calls/CA….json
RECORDINGS_PATH = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>AC[0-9a-f]{32})/Recordings\.json$")
CALL_PATH = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>AC[0-9a-f]{32})/Calls/(?P<sid>CA[0-9a-f]{32})\.json$")
RECORDING_DELETE = "Recordings/<sid>"  # fail_next's name for DELETE Recordings/RE….json
MESSAGE_RECORDS = "Messages/<sid>"  # fail_next's name for GET Messages/SM….json
MESSAGE_PATH = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>AC[0-9a-f]{32})/Messages/"
    r"(?P<sid>SM[0-9a-f]{32})\.json$")
RECORDING_PATH = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>AC[0-9a-f]{32})/Recordings/"
    r"(?P<sid>RE[0-9a-fA-F]{32})\.json$")


def rfc2822(when: datetime) -> str:
    """A time as Twilio's JSON gives it."""
    return format_datetime(when.astimezone(UTC), usegmt=True)


def twilio_error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    """An error answer as Twilio gives it."""
    return status, {"code": code, "message": message,
                    "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}


@dataclass
class ApiRequest:
    """One request the stand-in received."""

    method: str
    path: str
    authorised: bool
    form: dict[str, str]
    status: int
    # Every value of every field (StatusCallbackEvent comes once per event).
    fields: dict[str, list[str]] = field(default_factory=dict)

    @property
    def resource(self) -> str | None:
        match = RESOURCE_PATH.fullmatch(self.path)
        return match["resource"] if match else None


class TwilioApi:
    """Twilio's Messages and Calls resources on 127.0.0.1: checks the login, records, answers."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self._expected = "Basic " + base64.b64encode(
            f"{account_sid}:{auth_token}".encode()).decode()
        self.requests: list[ApiRequest] = []
        self._script: dict[str, list[tuple[int, dict[str, Any]]]] = {
            MESSAGES: [], CALLS: [], RECORDINGS: [], CALL_RECORDS: [], RECORDING_DELETE: [],
            MESSAGE_RECORDS: []}
        self.recordings: list[dict[str, Any]] = []  # the account's, as Twilio lists them
        self.messages: list[dict[str, Any]] = []  # those it accepted (GET Messages.json)
        self.remote_calls: dict[str, dict[str, Any]] = {}
        # Called with the resource ("Calls", "Messages"...) before a POST to it is answered:
        # a test's moment to act while the app waits for Twilio.
        self.before_answer: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> TwilioApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, *answers: tuple[int, dict[str, Any]], resource: str = MESSAGES) -> None:
        """Answer the next requests to the resource with these (HTTP status, Twilio error)."""
        with self._lock:
            self._script[resource].extend(answers)

    def sent(self) -> list[dict[str, str]]:
        """Forms of the messages Twilio accepted."""
        return [r.form for r in self.requests if r.status == 201 and r.resource == MESSAGES]

    def calls(self) -> list[ApiRequest]:
        """The calls Twilio accepted."""
        return [r for r in self.requests if r.status == 201 and r.resource == CALLS]

    def add_recording(self, sid: str, call_sid: str, media_url: str, created: datetime, *,
                      duration: str = "5", source: str = "RecordVerb",
                      status: str = "completed") -> None:
        """Put a recording in the account's list."""
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Recordings/{sid}"
        with self._lock:
            self.recordings.append({
                "account_sid": self.account_sid, "api_version": "2010-04-01",
                "call_sid": call_sid, "conference_sid": None, "channels": 1,
                "date_created": rfc2822(created), "date_updated": rfc2822(created),
                "start_time": rfc2822(created - timedelta(seconds=int(duration or 0))),
                "duration": duration, "sid": sid, "price": None, "price_unit": "USD",
                "status": status, "source": source, "error_code": None,
                "encryption_details": None, "uri": uri + ".json", "media_url": media_url,
                "subresource_uris": {"transcriptions": uri + "/Transcriptions.json"},
            })

    def add_call(self, sid: str, from_number: str, to_number: str, started: datetime, *,
                 status: str = "completed", duration: str = "60") -> None:
        """Let Twilio know a call (for GET Calls/<sid>.json)."""
        with self._lock:
            self.remote_calls[sid] = {
                **self._call({"To": to_number, "From": from_number, "Url": "x"})[1],
                "sid": sid, "direction": "inbound", "status": status, "duration": duration,
                "start_time": rfc2822(started), "end_time": rfc2822(started + timedelta(
                    seconds=int(duration))),
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json"}

    def _list_recordings(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        size, page = int(query.get("PageSize", "50")), int(query.get("Page", "0"))
        after = query.get("DateCreated>")
        since = datetime.fromisoformat(after.replace("Z", "+00:00")) if after else None
        with self._lock:
            rows = [r for r in reversed(self.recordings)
                    if since is None or parsedate_to_datetime(r["date_created"]) >= since]
        base = f"/2010-04-01/Accounts/{self.account_sid}/Recordings.json"
        more = (page + 1) * size < len(rows)
        return 200, {
            "recordings": rows[page * size:(page + 1) * size], "page": page, "page_size": size,
            "start": page * size, "end": min(len(rows), (page + 1) * size) - 1,
            "uri": f"{base}?{urlencode({**query, 'Page': page})}",
            "first_page_uri": f"{base}?{urlencode({**query, 'Page': 0})}",
            "previous_page_uri": None,
            "next_page_uri": f"{base}?{urlencode({**query, 'Page': page + 1})}" if more else None,
        }

    def _list_messages(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """GET Messages.json: the accepted messages, newest first, filtered by To and From
        (one page: enough for the few a resident gets)."""
        size = int(query.get("PageSize", "50"))
        with self._lock:
            rows = [m for m in reversed(self.messages)
                    if query.get("To", m["to"]) == m["to"]
                    and query.get("From", m["from"]) == m["from"]][:size]
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        return 200, {"messages": rows, "page": 0, "page_size": size, "start": 0,
                     "end": len(rows) - 1, "uri": f"{base}?{urlencode(query)}",
                     "first_page_uri": f"{base}?{urlencode(query)}",
                     "previous_page_uri": None, "next_page_uri": None}

    def _delete_recording(self, sid: str) -> tuple[int, dict[str, Any]]:
        """DELETE Recordings/<sid>.json: 204 when the account has it (then no more), else 404."""
        with self._lock:
            if self._script[RECORDING_DELETE]:
                return self._script[RECORDING_DELETE].pop(0)
            kept = [r for r in self.recordings if r["sid"] != sid]
            found = len(kept) < len(self.recordings)
            self.recordings = kept
        if not found:
            return twilio_error(404, 20404, f"The requested resource {sid} was not found")
        return 204, {}

    def _answer(self, method: str, path: str, authorization: str,
                form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(path)
        deleting = RECORDING_PATH.fullmatch(parts.path)
        if method == "DELETE" and deleting and deleting["account"] == self.account_sid:
            if authorization != self._expected:
                return twilio_error(401, 20003, "Authenticate")
            return self._delete_recording(deleting["sid"])
        listing, showing = (RECORDINGS_PATH.fullmatch(parts.path),
                            CALL_PATH.fullmatch(parts.path))
        resource_get = RESOURCE_PATH.fullmatch(parts.path)
        if (method == "GET" and resource_get and resource_get["resource"] == MESSAGES
                and resource_get["account"] == self.account_sid):
            if authorization != self._expected:
                return twilio_error(401, 20003, "Authenticate")
            return self._list_messages({k: v[0] for k, v in parse_qs(parts.query).items()})
        message_get = MESSAGE_PATH.fullmatch(parts.path)
        if method == "GET" and message_get and message_get["account"] == self.account_sid:
            if authorization != self._expected:
                return twilio_error(401, 20003, "Authenticate")
            with self._lock:  # GET Messages/SM….json: one accepted message, as it is now
                if self._script[MESSAGE_RECORDS]:
                    return self._script[MESSAGE_RECORDS].pop(0)
                found = next((m for m in self.messages if m["sid"] == message_get["sid"]), None)
            if found is None:
                return twilio_error(404, 20404, f"The requested resource {path} was not found")
            return 200, found
        if method == "GET" and (listing or showing) and authorization != self._expected:
            return twilio_error(401, 20003, "Authenticate")
        if method == "GET" and listing and listing["account"] == self.account_sid:
            with self._lock:
                if self._script[RECORDINGS]:
                    return self._script[RECORDINGS].pop(0)
            return self._list_recordings({k: v[0] for k, v in parse_qs(parts.query).items()})
        if method == "GET" and showing and showing["account"] == self.account_sid:
            with self._lock:
                if self._script[CALL_RECORDS]:
                    return self._script[CALL_RECORDS].pop(0)
                call = self.remote_calls.get(showing["sid"])
            if call is None:
                return twilio_error(404, 20404, f"The requested resource {path} was not found")
            return 200, call
        match = RESOURCE_PATH.fullmatch(path)
        if method != "POST" or not match or match["account"] != self.account_sid:
            return twilio_error(404, 20404, f"The requested resource {path} was not found")
        if authorization != self._expected:
            return twilio_error(401, 20003, "Authenticate")
        resource = match["resource"]
        if self.before_answer is not None:
            self.before_answer(resource)
        with self._lock:
            if self._script[resource]:
                return self._script[resource].pop(0)
        if resource == CALLS:
            return self._call(form)
        return self._message(form)

    def _message(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        sid = "SM" + uuid.uuid4().hex
        now = format_datetime(datetime.now(UTC), usegmt=True)
        body = form.get("Body", "")
        message = {
            "account_sid": self.account_sid, "api_version": "2010-04-01", "body": body,
            "date_created": now, "date_sent": None, "date_updated": now,
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": form.get("From"), "messaging_service_sid": None, "num_media": "0",
            "num_segments": str(segments(body).parts), "price": None, "price_unit": "USD",
            "sid": sid, "status": "queued", "to": form.get("To"),
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"},
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        with self._lock:
            self.messages.append(message)
        return 201, message

    def _call(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if not form.get("To") or not form.get("From"):
            return twilio_error(400, 21201, "No 'To' number is specified" if not form.get("To")
                                else "No 'From' number is specified")
        if not form.get("Url") and not form.get("Twiml") and not form.get("ApplicationSid"):
            return twilio_error(400, 21205, "Url parameter is required.")
        sid = "CA" + uuid.uuid4().hex
        now = format_datetime(datetime.now(UTC), usegmt=True)
        base = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}"
        return 201, {
            "account_sid": self.account_sid, "annotation": None, "answered_by": None,
            "api_version": "2010-04-01", "caller_name": None, "date_created": now,
            "date_updated": now, "direction": "outbound-api", "duration": None,
            "end_time": None, "forwarded_from": None, "from": form["From"],
            "from_formatted": form["From"], "group_sid": None, "parent_call_sid": None,
            "phone_number_sid": "PN" + "0" * 32, "price": None, "price_unit": "USD",
            "sid": sid, "start_time": None, "status": "queued", "to": form["To"],
            "to_formatted": form["To"], "trunk_sid": None, "queue_time": "0",
            "subresource_uris": {"notifications": f"{base}/Notifications.json",
                                 "recordings": f"{base}/Recordings.json"},
            "uri": f"{base}.json",
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                fields = parse_qs(raw, keep_blank_values=True, strict_parsing=False)
                # Twilio takes each field once (but events); a repeated one is a client bug.
                assert all(len(v) == 1 for k, v in fields.items() if k not in REPEATABLE), \
                    fields
                form = {k: v[0] for k, v in fields.items()}
                authorization = self.headers.get("Authorization", "")
                status, payload = api._answer(self.command, self.path, authorization, form)
                with api._lock:
                    api.requests.append(ApiRequest(self.command, self.path,
                                                   authorization == api._expected, form, status,
                                                   fields))
                data = b"" if status == 204 else json.dumps(payload).encode()
                self.send_response(status)
                if status != 204:  # No Content: no body, as Twilio answers a DELETE
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = _serve
            do_GET = _serve
            do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
