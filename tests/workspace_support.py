"""Helpers for tests of the workspace: a consultant's browser, page parsing, accounts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import ScriptInfo
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from hotline.cli import main as hotline_cli
from hotline.config import LOCAL_TIME
from tests.support import BASE_URL

PASSWORD = "correct horse 42"
Db = Callable[[], AbstractContextManager[Session]]


class Page(HTMLParser):
    """What a test reads from an HTML page: form inputs, table cells, error messages, text.

    Text for screen readers only (class visually-hidden) is left out: the tests read what the
    page shows; `hidden_texts` keeps it for the tests of what screen readers hear."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.inputs: dict[str, str] = {}
        self.rows: list[list[str]] = []
        self.errors: list[str] = []
        self.headings: list[str] = []
        self.buttons: list[str] = []
        self.links: list[str] = []
        self.lang = ""
        self._cell: list[str] | None = None
        self._capture: list[str] | None = None
        self._capture_into: list[str] | None = None
        self.hidden_texts: list[str] = []
        self._hidden: str | None = None  # the tag of the visually hidden element we are in
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note inputs and the start of cells, headings, buttons and error messages."""
        attributes = {name: value or "" for name, value in attrs}
        if "visually-hidden" in attributes.get("class", "").split() and self._hidden is None:
            self._hidden = tag
            self.hidden_texts.append("")
            return
        if tag == "html":
            self.lang = attributes.get("lang", "")
        elif tag == "input" and "name" in attributes:
            self.inputs[attributes["name"]] = attributes.get("value", "")
        elif tag == "a" and "href" in attributes:
            self.links.append(attributes["href"])
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h1":
            self._start(self.headings)
        elif tag == "button":
            self._start(self.buttons)
        elif "error" in attributes.get("class", "").split():
            self._start(self.errors)

    def _start(self, into: list[str]) -> None:
        self._capture, self._capture_into = [], into

    def handle_endtag(self, tag: str) -> None:
        """Close a cell or a captured element."""
        if self._hidden is not None:
            if tag == self._hidden:
                self._hidden = None
                self.hidden_texts[-1] = " ".join(self.hidden_texts[-1].split())
            return
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag in ("h1", "button", "p", "span") and self._capture is not None:
            assert self._capture_into is not None
            self._capture_into.append(" ".join("".join(self._capture).split()))
            self._capture = self._capture_into = None

    def handle_data(self, data: str) -> None:
        """Collect text into the open cell or captured element."""
        if self._hidden is not None:
            self.hidden_texts[-1] += data
            return
        if self._cell is not None:
            self._cell.append(data)
        if self._capture is not None:
            self._capture.append(data)


@pytest.fixture(autouse=True)
def daytime_in_almaty(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Tests run at any hour; the Call button works only in calling hours (9-20 Almaty by
    default): its clock reads noon in Almaty today (the claims' clock stays the real one).
    A test of the refusal sets hotline.callbacks.calling_clock itself."""
    noon = datetime.now(LOCAL_TIME).replace(hour=12, minute=0, second=0, microsecond=0)
    monkeypatch.setattr("hotline.callbacks.calling_clock", lambda: noon.astimezone(UTC))
    return noon


def page(response: TestResponse) -> Page:
    """Parse an HTML response."""
    assert response.mimetype == "text/html"
    return Page(response.get_data(as_text=True))


class Browser:
    """A consultant's browser: cookies, CSRF tokens taken from the forms, https."""

    def __init__(self, application: Flask, ip: str = "203.0.113.7",
                 language: str | None = "en") -> None:
        self.client: FlaskClient = application.test_client()
        self.ip = ip
        self.headers = {"Accept-Language": language} if language else {}

    def get(self, path: str, headers: dict[str, str] | None = None,
            query_string: dict[str, str] | None = None) -> TestResponse:
        """GET a page."""
        return self.client.get(path, base_url=BASE_URL, query_string=query_string,
                               headers={**self.headers, **(headers or {})},
                               environ_base={"REMOTE_ADDR": self.ip})

    def post(self, path: str, data: Mapping[str, str | list[str]]) -> TestResponse:
        """POST a form from a page of the site (a browser sends the Referer; CSRF checks it)."""
        return self.client.post(path, base_url=BASE_URL, data=data,
                                headers={**self.headers, "Referer": f"{BASE_URL}/queue"},
                                environ_base={"REMOTE_ADDR": self.ip})

    def token(self, path: str = "/login") -> str:
        """The CSRF token of the form on path."""
        return page(self.get(path)).inputs["csrf_token"]

    def login(self, email: str, password: str = PASSWORD) -> TestResponse:
        """Fill in and send the login form."""
        return self.post("/login", {"csrf_token": self.token(), "email": email,
                                    "password": password})

    def logout(self) -> TestResponse:
        """Press the logout button of the queue page."""
        return self.post("/logout", {"csrf_token": self.token("/queue")})


def users_cli(application: Flask, args: list[str], input: str | None = None) -> Result:
    """Run `hotline users ...` against the application."""
    obj = ScriptInfo(create_app=lambda: application)
    return CliRunner().invoke(hotline_cli, ["users", *args], obj=obj, input=input,
                              catch_exceptions=False)


def add_user(application: Flask, email: str, role: str = "consultant",
             name: str = "Aigerim Nurlanovna") -> None:
    """Create an account with PASSWORD the way a coordinator does, on the command line."""
    result = users_cli(application, ["add", email, "--role", role, "--name", name],
                       input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output



@pytest.fixture
def consultant(app: Flask) -> str:
    """A consultant's email; the password is PASSWORD."""
    add_user(app, "lawyer@example.kz")
    return "lawyer@example.kz"


@pytest.fixture
def coordinator(app: Flask) -> str:
    """A coordinator's email; the password is PASSWORD."""
    add_user(app, "coordinator@example.kz", role="coordinator", name="Dana Coordinator")
    return "coordinator@example.kz"
