"""Twilio at the web edge: the signature check, public URLs, and form parsing."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import abort, current_app, g, request, url_for
from twilio.request_validator import RequestValidator

from hotline.runtime import Runtime

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
RECORDING_SID = re.compile(r"^RE[0-9a-fA-F]{32}$")


def runtime() -> Runtime:
    """Return the runtime of the current app."""
    return cast(Runtime, current_app.extensions["hotline"])


def public_url() -> str:
    """Return the URL Twilio requested, as Twilio saw it (PUBLIC_BASE_URL behind a proxy)."""
    base = runtime().settings.public_base_url
    if base:
        query = request.query_string.decode("latin-1")
        path = request.script_root + request.path
        return f"{base}{path}?{query}" if query else f"{base}{path}"
    return _requested_url()


# What werkzeug's quote() and uri_to_iri() leave as they are in a path and a query (no "%": an
# escape may be decoded; a host in lower case (it is lowered) without "xn--" (decoded)).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,/:;=@]*")
_PLAIN_QUERY = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,/:;=?@]*")
# Not empty: no host (a Host header werkzeug refuses) is left to request.url.
_PLAIN_HOST = re.compile(r"[a-z0-9\-.:\[\]]+")


def _requested_url() -> str:
    """Return request.url, building it directly for the usual plain ASCII URL.

    request.url quotes each part and then turns the whole into an IRI (uri_to_iri): about 9 µs
    of the 380 a webhook took in the application (bench/webhook_throughput.py). For a URL that
    both steps leave unchanged, the parts joined are the same string.
    """
    host, root, path, query = request.host, request.root_path, request.path, request.query_string
    if not (_PLAIN_HOST.fullmatch(host) and "xn--" not in host.lower()
            and _PLAIN_PATH.fullmatch(root) and _PLAIN_PATH.fullmatch(path)
            and _PLAIN_QUERY.fullmatch(query)):
        return request.url
    url = f"{request.scheme}://{host}{root.rstrip('/')}/{path.lstrip('/')}"
    return f"{url}?{query.decode('ascii')}" if query else url


def url_origin() -> tuple[str, ...]:
    """Return what the absolute URLs external_url makes depend on, for this request.

    The public base URL when set; otherwise the scheme, host and script root url_for builds
    them from (cheaper than building request.host_url on every webhook).
    """
    base = runtime().settings.public_base_url
    if base:
        return (base,)
    return (request.scheme, request.host, request.root_path)


def external_url(endpoint: str, **params: Any) -> str:
    """Return an absolute URL for Twilio to call next (on the public base URL when set)."""
    base = runtime().settings.public_base_url
    clean = {k: v for k, v in params.items() if v is not None and v != ""}
    if base:
        return base + url_for(endpoint, **clean)
    return url_for(endpoint, _external=True, **clean)


def twilio_webhook(view: F) -> F:
    """Reject a request without a valid X-Twilio-Signature with 403 before the view runs."""

    @wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not _signed(signature):
            # The address it was checked for: Twilio signs the one it called, so a wrong
            # PUBLIC_BASE_URL (or proxy settings) looks like a wrong token unless this says.
            log.warning("refused a webhook with a bad signature: %s (checked for %s with "
                        "TWILIO_AUTH_TOKEN: Twilio signs the address it called, which "
                        "PUBLIC_BASE_URL must give)", request.path, public_url())
            abort(403)
        g.twilio_signed = True  # for error handlers that act on the request (hotline.sms)
        return view(*args, **kwargs)

    return cast(F, checked)


def signed_by_twilio() -> bool:
    """Whether this request's signature was checked and good (twilio_webhook)."""
    return bool(g.get("twilio_signed"))


def _signed(signature: str) -> bool:
    """Whether Twilio signed this request: first for the URL as requested (one HMAC, the usual
    case), then as the library checks it (the URL with and without its port: two more).

    A URL the library cannot take apart is no signature: a Host of "[1:2]" (Werkzeug takes
    it for an IPv6 address) made urlparse's port raise ValueError, past the check into the
    SMS webhook's fallback, which kept the message (a forged STOP) without a signature."""
    url = public_url()
    validator = RequestValidator(runtime().settings.twilio_auth_token)
    expected = validator.compute_signature(url, request.form)
    if hmac.compare_digest(expected.encode(), signature.encode()):
        return True
    try:
        return bool(validator.validate(url, request.form, signature))
    except ValueError:
        return False


def form_sid(name: str, pattern: re.Pattern[str]) -> str:
    """Return a Twilio SID field from the form, or answer 400 when it is missing or malformed."""
    value = request.form.get(name, "")
    if not pattern.fullmatch(value):
        abort(400, description=f"{name} is missing or malformed")
    return value


def form_int(name: str) -> int | None:
    """Return an integer field from the form, None when absent; 400 when it is not a number."""
    value = request.form.get(name, "").strip()
    if not value:
        return None
    # ASCII only: str.isdigit() accepts "²" and other digits that int() refuses.
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        abort(400, description=f"{name} must be a number")
    return int(value)
