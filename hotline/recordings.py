"""Fetch a recorded question from Twilio's media host and keep it in the audio store.

Only URLs on TWILIO_MEDIA_HOSTS are fetched (https; plain http only on this machine). Redirects
are followed by hand, at most MAX_REDIRECTS of them, and every target must be on the allow-list
too: Twilio's media URLs may redirect to a storage or CDN host, and an operator who sees
recordings refused with "redirected to '<host>'" adds that host to TWILIO_MEDIA_HOSTS (then
`hotline recordings retry`). The account's SID and token go only to the scheme, host and port of
the original URL, never to a host it redirects to.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from hotline.runtime import Runtime
from storage import questions
from storage.db import unit_of_work
from storage.models import DOWNLOAD_DELETED, DOWNLOAD_STORED

log = logging.getLogger(__name__)

# Statuses worth another try: the recording is not there yet, or the host is struggling.
RETRY_STATUSES = {404, 408, 425, 429, 500, 502, 503, 504}
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 3
URL_QUERY = re.compile(r"\?[^\s'\"()]*")
CONNECT_TIMEOUT, READ_TIMEOUT = 5, 30
MAX_RECORDING_BYTES = 50 * 1024 * 1024  # 120 s of 8 kHz WAV is about 2 MB


class DownloadError(Exception):
    """The recording could not be fetched; the message is kept on the recording row."""


class RedirectRefused(DownloadError):
    """A redirect to a host not on the allow-list: the row is kept 'refused' for an operator."""


class BodyRefused(DownloadError):
    """What the media host sent is no recording to keep (not a WAV, larger than 50 MB): the
    same answer again would be no better, so the row is kept 'refused' for an operator rather
    than fetched again, up to SWEEP_DOWNLOAD_ATTEMPTS times, 50 MB each."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def media_url_allowed(url: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Tell whether url is on an allowed media host (https; plain http only on this machine)."""
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return False
    if parts.scheme not in ("https", "http") or not host or parts.username or parts.password:
        return False
    if parts.scheme == "http" and not _is_loopback(host):
        return False
    port = port or (443 if parts.scheme == "https" else 80)
    for entry in allowed_hosts:
        allowed_host, _, allowed_port = entry.partition(":")
        if host == allowed_host and (not allowed_port or allowed_port == str(port)):
            return True
    return False


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return (parts.scheme, (parts.hostname or "").lower(),
            parts.port or (443 if parts.scheme == "https" else 80))


def _host_of(url: str) -> str:
    """host[:port] of url for messages: never its credentials, path or query (signed URLs)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "(unreadable URL)"


def _get(url: str, auth: tuple[str, str], allowed_hosts: tuple[str, ...]) -> requests.Response:
    """GET url (streamed), following at most MAX_REDIRECTS redirects, each one allow-listed.

    The credentials go only to the original URL's scheme, host and port; a redirect elsewhere
    is fetched without them (Twilio's redirects to its storage carry a signed URL instead).
    """
    origin, current = _origin(url), url
    for _hop in range(MAX_REDIRECTS + 1):
        response = requests.get(
            current, auth=auth if _origin(current) == origin else None, stream=True,
            allow_redirects=False, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
        )
        if response.status_code not in REDIRECT_STATUSES:
            return response
        location = response.headers.get("Location", "")
        response.close()
        if not location:
            raise DownloadError(f"HTTP {response.status_code} from media host without a Location")
        target = urljoin(current, location)
        if not media_url_allowed(target, allowed_hosts):
            raise RedirectRefused(f"refused: the media host redirected to {_host_of(target)!r}, "
                                  "which is not in TWILIO_MEDIA_HOSTS")
        current = target
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects from the media host")


def fetch_to_file(
    url: str,
    target: Path,
    *,
    auth: tuple[str, str],
    allowed_hosts: tuple[str, ...],
    attempts: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Download url into target atomically, retrying while the host says 'not yet'; return bytes.

    Redirects are followed only to allowed_hosts (RedirectRefused otherwise, never retried).
    """
    last_error = "no attempt made"
    for attempt in range(max(1, attempts)):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        try:
            with _get(url, auth, allowed_hosts) as response:
                if response.status_code in RETRY_STATUSES:
                    last_error = f"HTTP {response.status_code} from media host"
                    continue
                if response.status_code != 200:
                    raise DownloadError(f"HTTP {response.status_code} from media host")
                return _write_wav(response, target)
        except (requests.ConnectionError, requests.Timeout) as exc:
            # requests names the URL: its query (a redirect's signed URL) stays out of logs.
            last_error = f"{type(exc).__name__}: {URL_QUERY.sub('?…', str(exc))}"
    raise DownloadError(f"gave up after {attempts} attempts: {last_error}")


def _write_wav(response: requests.Response, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > MAX_RECORDING_BYTES:
                    raise BodyRefused("recording is larger than 50 MB")
                out.write(chunk)
        with open(tmp_name, "rb") as check:
            header = check.read(12)
        if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            raise BodyRefused("media host did not send a WAV file")
        # The RIFF header says how long the file is: a body that ended early (a connection
        # closed mid-transfer, without a Content-Length to tell) is no recording to keep as
        # stored, but a download to try again. 0 and 0xFFFFFFFF: a writer that did not know.
        declared = int.from_bytes(header[4:8], "little") + 8
        # One byte of slack: some writers count the pad byte of an odd-sized chunk but do not
        # write it.
        if header[4:8] not in (b"\0\0\0\0", b"\xff\xff\xff\xff") and size + 1 < declared:
            raise DownloadError(f"recording cut short: {size} of {declared} bytes")
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return size


def relative_audio_path(recording_sid: str, when: datetime) -> str:
    """Where a recording lives under the audio root (the SID was validated at the webhook)."""
    return f"recordings/{when:%Y/%m}/{recording_sid}.wav"


def download_recording(
    runtime: Runtime, recording_id: int, sleep: Callable[[float], None] = time.sleep
) -> str:
    """Fetch one recording, keep it in the audio store, note the outcome on its row.

    Returns the download state. The store is runtime.audio (HOTLINE_AUDIO_STORE); the key is
    relative_audio_path, kept in Recording.file_path.
    """
    settings, store = runtime.settings, runtime.audio
    with unit_of_work(runtime.sessions) as session:
        recording = questions.get_recording(session, recording_id)
        if recording is None:
            log.error("recording %s does not exist", recording_id)
            return "missing"
        if recording.download_state == DOWNLOAD_STORED and recording.file_path and (
            store.exists(recording.file_path, session=session)
        ):
            return recording.download_state
        if recording.download_state == DOWNLOAD_DELETED:
            # Retention deleted it (a late duplicate job or callback): not fetched again.
            return recording.download_state
        url, sid, created = recording.source_url, recording.recording_sid, recording.created_at
        now = datetime.now(UTC)
        if not media_url_allowed(url, settings.twilio_media_hosts):
            host = _host_of(url)
            log.warning("refused to fetch recording %s from %r: not a media host", sid, host)
            questions.mark_recording_failed(
                session, recording, f"refused: {host!r} is not in TWILIO_MEDIA_HOSTS", now,
                refused=True,
            )
            return recording.download_state
        questions.count_download_attempt(session, recording, now)
    relative = relative_audio_path(sid, created)
    try:
        # Fetched into a scratch folder on this machine, then handed to the audio store (the
        # audio folder, or the database) together with the row: in one transaction, so the
        # row says "stored" only once the audio is committed (a database store's blob goes
        # in with it; a folder store's file is in place before the commit).
        with tempfile.TemporaryDirectory(prefix="hotline-download-") as scratch:
            downloaded = Path(scratch) / Path(relative).name
            fetch_to_file(
                url, downloaded,
                auth=(settings.twilio_account_sid, settings.twilio_auth_token),
                allowed_hosts=settings.twilio_media_hosts,
                attempts=settings.download_attempts, backoff=settings.download_backoff,
                sleep=sleep,
            )
            with unit_of_work(runtime.sessions) as session:
                store.put(relative, downloaded, session=session)
                recording = questions.get_recording(session, recording_id)
                assert recording is not None
                questions.mark_recording_stored(session, recording, relative, datetime.now(UTC))
                return recording.download_state
    except (DownloadError, OSError) as exc:
        log.warning("recording %s not downloaded: %s", sid, exc)
        with unit_of_work(runtime.sessions) as session:
            # Locked, and read as committed: on PostgreSQL the other job's "stored" committed
            # between a plain read and this write would otherwise be overwritten with "failed".
            recording = questions.get_recording(session, recording_id, lock=True)
            assert recording is not None
            if recording.download_state == DOWNLOAD_STORED and recording.file_path and (
                store.exists(recording.file_path, session=session)
            ):
                # Twilio's two webhooks each enqueue a download: the other job stored the
                # audio meanwhile, and this one's failure changes nothing.
                return recording.download_state
            questions.mark_recording_failed(session, recording, str(exc), datetime.now(UTC),
                                            refused=isinstance(exc, (RedirectRefused,
                                                                     BodyRefused)))
            return recording.download_state
