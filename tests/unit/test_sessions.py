"""hotline.auth.CookieSessions: Flask's signed-cookie sessions with shortcuts for webhooks.

For every way a request can treat the session (not at all, read it, write it, empty it, with
and without a cookie), the response's Set-Cookie and Vary headers are what Flask's own
SecureCookieSessionInterface gives.
"""

from __future__ import annotations

import re

import pytest
from flask import Flask, session
from flask.sessions import SecureCookieSessionInterface

from hotline.auth import CookieSessions


def _app(interface: SecureCookieSessionInterface) -> Flask:
    app = Flask(__name__)
    app.secret_key = "test-secret"
    app.session_interface = interface

    @app.post("/untouched")
    def untouched() -> str:
        return "ok"

    @app.post("/read")
    def read() -> str:
        return str(session.get("user"))

    @app.post("/write")
    def write() -> str:
        session["user"] = "lawyer"
        return "ok"

    @app.post("/clear")
    def clear() -> str:
        session.clear()
        return "ok"

    return app


@pytest.mark.parametrize("path", ["/untouched", "/read", "/write", "/clear"])
@pytest.mark.parametrize("with_cookie", [False, True])
def test_headers_are_flasks_own(path: str, with_cookie: bool) -> None:
    seen = []
    for interface in (SecureCookieSessionInterface(), CookieSessions()):
        client = _app(interface).test_client()
        if with_cookie:
            client.post("/write")  # the session cookie, as a logged-in browser has it
        response = client.post(path)
        # The signed value carries a timestamp in seconds: compare all but the value.
        cookies = [re.sub(r"=[^;]*", "=<value>", c, count=1)
                   for c in response.headers.getlist("Set-Cookie")]
        seen.append((response.status_code, cookies,
                     response.headers.get("Vary"), response.get_data(as_text=True)))
    assert seen[0] == seen[1]
    if path == "/write" or (path == "/clear" and with_cookie):
        assert seen[1][1]  # a cookie set or deleted: the comparison saw one
