"""The application factory."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, abort, request
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, Map

from hotline import jobs
from hotline.config import EXAMPLE_PHONE_NUMBER, EXAMPLE_PUBLIC_BASE_URL, Settings
from hotline.runtime import build_runtime
from storage.models import MAX_ROW_ID
from storage.phones import normalise_phone

log = logging.getLogger(__name__)

# Twilio's webhook forms are small; anything bigger than this is not Twilio.
MAX_REQUEST_BYTES = 64 * 1024

# Every HTML page's Content-Security-Policy: scripts, styles, audio and requests from this site
# only, and no code or style written into the page itself (static/workspace.js does what
# attributes did; htmx is told not to add a <style> or run code: base.html). Markup someone
# managed to inject would run nothing; no page may be framed, nor a form sent elsewhere.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self'",
    "media-src 'self'", "connect-src 'self'", "object-src 'none'", "base-uri 'none'",
    "form-action 'self'", "frame-ancestors 'none'",
))


class RowIdConverter(IntegerConverter):
    """`<int:...>` in a route is a row id: a larger number is no such page (404), not a 500."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ROW_ID)
        super().__init__(map, *args, **kwargs)


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Create the hotline app from the environment, with config (a Settings or overrides) last."""
    if isinstance(config, Settings):
        settings = config
    else:
        settings = Settings.from_env().override(**dict(config or {}))
    runtime = build_runtime(settings)

    app = Flask(__name__, instance_path=str(settings.data_dir))
    app.config.update(SECRET_KEY=settings.ensure_secret_key(),
                      MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES)
    # Before any route is added: /questions/99999999999999999999 was an overflow in the driver.
    app.url_map.converters["int"] = RowIdConverter
    app.extensions["hotline"] = runtime

    @app.before_request
    def refuse_nul() -> None:
        """A NUL character in a parameter is nobody's input, and PostgreSQL refuses it in text
        (a 500 wherever a view stores or looks up the value): 400 before any view runs.

        Except a resident's SMS: some gateways deliver GSM-7's "@" (code 0) as NUL, and a 400
        would lose the message; the SMS webhook drops control characters itself."""
        if request.blueprint == "sms":
            return
        values = list(request.args.items(multi=True))
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            # Only a form: another body (the demo phone's WAV upload) keeps its own size limit.
            values += request.form.items(multi=True)
        if any("\x00" in key or "\x00" in value for key, value in values):
            abort(400, description="a parameter contains a NUL character")

    @app.after_request
    def content_security_policy(response: Response) -> Response:
        """The policy on every HTML page (TwiML, JSON, audio and CSV need none)."""
        if response.content_type.startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

    jobs.bind(runtime)
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops,
            x_host=settings.proxy_hops, x_port=settings.proxy_hops, x_prefix=settings.proxy_hops,
        )

    from hotline import health as health_checks
    from hotline import outbound_sms, sms, voice, workspace

    app.register_blueprint(voice.bp)
    app.register_blueprint(sms.bp)
    app.register_blueprint(outbound_sms.bp)
    from hotline import phone_demo, public_stats, reports_page  # noqa: F401  (reports: pages)

    workspace.init_app(app)  # logins, CSRF (Twilio's signed webhooks exempt), languages, pages
    app.register_blueprint(public_stats.bp)  # /public: figures for everyone, no login
    phone_demo.init_app(app)  # /phone, the built-in phone: demo mode only (404 otherwise)

    @app.get("/health")
    def health() -> dict[str, str]:
        """Tell a load balancer the process is up (what it does: /health/ready, hotline.health)."""
        return {"status": "ok"}

    app.register_blueprint(health_checks.bp)  # /health/ready: the worker, backlogs, for operators

    warn_of_settings(settings)
    if not settings.demo:
        if not settings.proxy_hops:
            app.before_request(_proxy_warning())
    if settings.demo:
        log.warning(
            "DEMO MODE is on: development Twilio credentials, recordings accepted from this "
            "machine, and the built-in phone at /phone signs webhook requests for anyone who "
            "opens it. Never run a public number like this (unset HOTLINE_DEMO)."
        )
    return app


def warn_of_settings(settings: Settings) -> None:
    """Say at start-up, in the web process and in the worker alike (the worker pseudonymises
    numbers and sends the SMS), what a deployment lacks that it starts without."""
    if not settings.secret_key and settings.database_url.startswith("postgresql"):
        log.warning(
            "SECRET_KEY is not set: this machine uses its own key from %s. Machines that do not "
            "share that file sign sessions differently (consultants are logged out) and "
            "pseudonymise numbers differently (an opt-out kept under a pseudonym is not "
            "found). Set one SECRET_KEY on every machine.", settings.data_dir / "secret_key")
    if not settings.demo:
        _warn_of_missing_twilio_settings(settings)


def _warn_of_missing_twilio_settings(settings: Settings) -> None:
    """Say at start-up what a production deployment lacks that the hotline starts without
    (only TWILIO_AUTH_TOKEN is required: incoming calls work with it alone)."""
    if not settings.twilio_account_sid:
        log.warning("TWILIO_ACCOUNT_SID is not set: recordings cannot be downloaded, and no "
                    "callback or SMS can be sent. Set it to the account's SID (AC...).")
    if not settings.twilio_phone_number:
        log.warning("TWILIO_PHONE_NUMBER is not set: callbacks would show no caller ID and no "
                    "SMS (receipts, answers) can be sent. Set it to the hotline's number.")
    if not settings.public_base_url:
        log.warning("PUBLIC_BASE_URL is not set: callback statuses are not reported, and SMS "
                    "delivery only late, when the sweep asks Twilio (a job has no request to "
                    "take the address from). Set it to the https address Twilio calls, and "
                    "HOTLINE_PROXY_HOPS behind a proxy.")
    if settings.public_base_url == EXAMPLE_PUBLIC_BASE_URL:
        log.warning("PUBLIC_BASE_URL is still the example's %s: Twilio signs each request for "
                    "the address it called, so every call to another address is refused (403). "
                    "Set it to the hotline's own https address.", EXAMPLE_PUBLIC_BASE_URL)
    if settings.twilio_phone_number == EXAMPLE_PHONE_NUMBER:
        log.warning("TWILIO_PHONE_NUMBER is still the example's %s: callbacks and SMS would "
                    "go out from a number that is not the hotline's (Twilio refuses them), and "
                    "the recording catch-up is off. Set it to the hotline's number.",
                    EXAMPLE_PHONE_NUMBER)
    elif settings.twilio_phone_number and normalise_phone(
            settings.twilio_phone_number, settings.default_region) is None:
        # Not refused: phonenumbers' ranges may lag behind a new one. But the catch-up finds
        # the hotline's calls by this number, and turns itself off without it.
        log.warning("TWILIO_PHONE_NUMBER %s is not a valid phone number: the recording "
                    "catch-up is off (it finds the hotline's calls by this number), and "
                    "callbacks and SMS may be refused. Set the hotline's number, like "
                    "+77172123456.", settings.twilio_phone_number)


def _proxy_warning() -> Callable[[], None]:
    """Behind a proxy that HOTLINE_PROXY_HOPS does not declare, every visitor has the proxy's
    address: one guesser's failed logins (20 an address) lock every consultant out, and the
    audit log names the proxy. Said once per app, at the first request that shows it."""
    warned = threading.Event()

    def warn() -> None:
        if "X-Forwarded-For" in request.headers and not warned.is_set():
            warned.set()
            log.warning("A request came through a proxy (X-Forwarded-For) but "
                        "HOTLINE_PROXY_HOPS is 0: every visitor has the proxy's address %s, so "
                        "failed logins from one visitor lock everyone out. Set "
                        "HOTLINE_PROXY_HOPS to the number of proxies in front of the app (1 "
                        "behind one nginx).", request.remote_addr)

    return warn
