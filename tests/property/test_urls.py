"""The URL a webhook's signature is checked against: the fast path equals werkzeug's request.url.

hotline.twilio_glue builds the requested URL itself when quoting and IRI decoding would leave
it unchanged; for any host, root path, path and query string, the result must be the string
request.url gives (Twilio signs the URL it requested; one character off is a 403 for every call).
"""

from __future__ import annotations

from flask import Flask, request
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hotline.twilio_glue import _requested_url

APP = Flask(__name__)
# Letters a URL carries, plain and not: reserved and unreserved ASCII, "%" escapes, non-ASCII.
URL_TEXT = st.lists(st.sampled_from(
    list("abcXYZ019-._~!$&'()*+,/:;=@?#% []") + ["%2F", "%41", "%D0%B0", "ж", "\u200f", "xn--"]),
    max_size=24).map("".join)
HOSTS = st.sampled_from(["localhost", "127.0.0.1:5000", "hotline.example.kz", "[::1]:8080",
                         "xn--80ak6aa92e.kz", "HOTLINE.example", "bücher.example"])


@settings(max_examples=400, deadline=None, database=None)
@given(host=HOSTS, root=URL_TEXT, path=URL_TEXT, query=URL_TEXT,
       scheme=st.sampled_from(["http", "https"]))
@example(host="localhost", root="", path="/voice/incoming", query="", scheme="http")
# A Host header werkzeug refuses (it reads as no host) beside a script root: request.url's own.
@example(host="bücher.example", root="/a", path="", query="", scheme="http")
@example(host="a.kz", root="/hotline", path="/voice/menu", query="node=main&tries=0&lang=kk",
         scheme="https")
def test_the_requested_url_is_request_url(host: str, root: str, path: str, query: str,
                                          scheme: str) -> None:
    def wsgi(text: str) -> str:  # WSGI's strings are bytes decoded as Latin-1
        return text.encode().decode("latin-1")

    environ = {"wsgi.url_scheme": scheme, "HTTP_HOST": wsgi(host),
               "SCRIPT_NAME": wsgi("/" + root if root else ""),
               "PATH_INFO": wsgi("/" + path.lstrip("/")), "QUERY_STRING": wsgi(query)}
    with APP.test_request_context(environ_overrides=environ):
        assert _requested_url() == request.url


def test_a_plain_url_takes_the_fast_path() -> None:
    """The usual webhook URL is built directly (not request.url's quote and uri_to_iri)."""
    environ = {"wsgi.url_scheme": "https", "HTTP_HOST": "a.kz", "SCRIPT_NAME": "",
               "PATH_INFO": "/voice/menu", "QUERY_STRING": "node=main&lang=kk"}
    with APP.test_request_context(environ_overrides=environ):
        request.__dict__["url"] = "poisoned"  # what request.url would answer from now on
        assert _requested_url() == "https://a.kz/voice/menu?node=main&lang=kk"
