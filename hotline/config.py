"""Typed settings read from the environment (and a `.env` file: read_dotenv)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from dotenv import find_dotenv, load_dotenv

from storage.workdays import WorkCalendar, supported_countries

# Kazakhstan keeps one zone, UTC+5 since March 2024 (a fixed offset: older tz data says +6).
# Times are stored in UTC and shown in this zone.
LOCAL_TIME = timezone(timedelta(hours=5), "Asia/Almaty")

DEMO_ACCOUNT_SID = "AC00000000000000000000000000000000"
DEMO_AUTH_TOKEN = "demo-auth-token-not-secret"
DEMO_PHONE_NUMBER = "+77000000000"


Number = TypeVar("Number", int, float)


class ConfigError(Exception):
    """The configuration cannot run the hotline; the message says what to set."""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _hosts(value: str) -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in value.split(",") if h.strip())


def _country(value: str) -> str | None:
    """HOTLINE_HOLIDAYS: a country code (KZ), or none / an empty value for no holidays."""
    code = value.strip().upper()
    return None if code in ("", "NONE") else code


def _number(env: Mapping[str, str], name: str, kind: type[Number], default: str) -> Number:
    """Read a whole number (int) or a number (float) setting; a bad one names the variable."""
    value = env.get(name, default)
    try:
        return kind(value.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, like {default}, not {value!r}.") from None


def _hours(value: str) -> tuple[int, int]:
    """Read HOTLINE_CALLBACK_HOURS: "9-20" is from 09:00 up to 20:00, Almaty time."""
    start, sep, end = value.strip().partition("-")
    if not sep or not start.strip().isdigit() or not end.strip().isdigit():
        raise ConfigError(f"HOTLINE_CALLBACK_HOURS must look like 9-20, not {value!r}.")
    return int(start), int(end)


def _minutes(value: str) -> tuple[int, ...]:
    """Read HOTLINE_CALLBACK_RETRY_MINUTES: delays after each failed attempt, "120,1440"."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError("HOTLINE_CALLBACK_RETRY_MINUTES must be minutes separated by commas, "
                          f"like 120,1440, not {value!r}.")
    return tuple(int(p) for p in parts)


@dataclass(frozen=True)
class Settings:
    """Everything the hotline needs to know about its deployment."""

    data_dir: Path = Path("instance")
    database_url: str = ""
    redis_url: str | None = None
    secret_key: str = ""
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_phone_number: str = ""
    twilio_api_url: str = "https://api.twilio.com"
    twilio_media_hosts: tuple[str, ...] = ("api.twilio.com",)
    public_base_url: str | None = None
    proxy_hops: int = 0
    vosk_model_kk: Path | None = None
    vosk_model_ru: Path | None = None
    demo: bool = False
    content_dir: Path | None = None
    russian_voice: str = "Polly.Tatyana"
    speech_rate: str = "85%"
    callback_days: int = 3
    gather_timeout: int = 7
    download_attempts: int = 5
    download_backoff: float = 2.0
    default_region: str = "KZ"
    queue_name: str = "hotline"
    stale_seconds: int = 600
    transcription_attempts: int = 4
    retry_backoff: float = 30.0
    sms_rate_limit: int = 10
    sms_questions_per_day: int = 5
    session_minutes: int = 60
    claim_idle_minutes: int = 30
    # Reports and retention (storage.reports, storage.retention); 0 days turns retention off.
    answer_target_days: int = 3
    # Whose public holidays are not working days in "N working days" (the callback promise's
    # badge in the queue, the reports' target; storage.workdays): a country code of the
    # holidays package, or None for Monday to Friday.
    holidays: str | None = "KZ"
    audio_retention_days: int = 90
    phone_retention_days: int = 365
    # Calling back: the daily window (local hours, start inclusive, end exclusive) in which
    # retries are scheduled, the delay after each failed attempt (the last one repeats), and
    # the attempts after which the question is closed and the resident gets an SMS.
    callback_hours: tuple[int, int] = (9, 20)
    callback_retry_minutes: tuple[int, ...] = (120, 1440)
    callback_attempts: int = 3
    # Where recordings' audio is kept (storage.audio_store): "folder" (<data dir>/audio, one
    # machine or a shared disk) or "database" (the audio_blobs table: machines share it).
    audio_store: str = "folder"
    # Recordings that no webhook stored are looked for in Twilio's list over this many hours
    # (hotline.recording_catchup); 0 turns it off.
    recording_catchup_hours: int = 24
    # Nightly backups (hotline.backup) into this folder, the newest backup_keep kept; None: the
    # worker makes none (`hotline backup --to DIR` still works).
    backup_dir: Path | None = None
    backup_keep: int = 7
    # An SMS receipt for each recorded question, with the number the lawyer will call from
    # (hotline.receipts). From the environment: on, except in demo mode (no Twilio to send
    # through); off here, so that code building Settings by hand sends none unless it asks.
    receipt_sms: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, with demo defaults when HOTLINE_DEMO is on."""
        if env is None:
            read_dotenv()
            env = os.environ
        data_dir = Path(env.get("HOTLINE_DATA_DIR", "instance")).resolve()
        demo = _flag(env.get("HOTLINE_DEMO"))
        media_hosts = _hosts(env.get("TWILIO_MEDIA_HOSTS", "api.twilio.com"))
        if demo:
            # The built-in simulator serves recordings from this machine.
            media_hosts = tuple(dict.fromkeys((*media_hosts, "127.0.0.1", "localhost")))
        models = data_dir / "models"  # the models_dir property, before the object exists
        content = env.get("HOTLINE_CONTENT_DIR")
        return cls(
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'hotline.sqlite3'}",
            redis_url=env.get("REDIS_URL") or None,
            secret_key=env.get("SECRET_KEY", ""),
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID")
            or (DEMO_ACCOUNT_SID if demo else ""),
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or (DEMO_AUTH_TOKEN if demo else ""),
            twilio_phone_number=env.get("TWILIO_PHONE_NUMBER")
            or (DEMO_PHONE_NUMBER if demo else ""),
            twilio_api_url=env.get("TWILIO_API_URL", "https://api.twilio.com").rstrip("/"),
            twilio_media_hosts=media_hosts,
            public_base_url=(env.get("PUBLIC_BASE_URL") or "").rstrip("/") or None,
            proxy_hops=_number(env, "HOTLINE_PROXY_HOPS", int, "0"),
            vosk_model_kk=Path(env["VOSK_MODEL_KK"]) if env.get("VOSK_MODEL_KK") else models / "kk",
            vosk_model_ru=Path(env["VOSK_MODEL_RU"]) if env.get("VOSK_MODEL_RU") else models / "ru",
            demo=demo,
            content_dir=Path(content) if content else None,
            russian_voice=env.get("HOTLINE_RU_VOICE", "Polly.Tatyana"),
            speech_rate=env.get("HOTLINE_SPEECH_RATE", "85%"),
            callback_days=_number(env, "HOTLINE_CALLBACK_DAYS", int, "3"),
            gather_timeout=_number(env, "HOTLINE_GATHER_TIMEOUT", int, "7"),
            download_attempts=_number(env, "HOTLINE_DOWNLOAD_ATTEMPTS", int, "5"),
            download_backoff=_number(env, "HOTLINE_DOWNLOAD_BACKOFF", float, "2"),
            queue_name=env.get("HOTLINE_QUEUE_NAME", "hotline"),
            stale_seconds=_number(env, "HOTLINE_STALE_SECONDS", int, "600"),
            transcription_attempts=_number(env, "HOTLINE_TRANSCRIPTION_ATTEMPTS", int, "4"),
            retry_backoff=_number(env, "HOTLINE_RETRY_BACKOFF", float, "30"),
            sms_rate_limit=_number(env, "HOTLINE_SMS_RATE_LIMIT", int, "10"),
            sms_questions_per_day=_number(env, "HOTLINE_SMS_QUESTIONS_PER_DAY", int, "5"),
            session_minutes=_number(env, "HOTLINE_SESSION_MINUTES", int, "60"),
            claim_idle_minutes=_number(env, "HOTLINE_CLAIM_IDLE_MINUTES", int, "30"),
            answer_target_days=_number(env, "HOTLINE_ANSWER_TARGET_DAYS", int, "3"),
            holidays=_country(env.get("HOTLINE_HOLIDAYS", "KZ")),
            audio_retention_days=_number(env, "HOTLINE_AUDIO_RETENTION_DAYS", int, "90"),
            phone_retention_days=_number(env, "HOTLINE_PHONE_RETENTION_DAYS", int, "365"),
            callback_hours=_hours(env.get("HOTLINE_CALLBACK_HOURS", "9-20")),
            callback_retry_minutes=_minutes(env.get("HOTLINE_CALLBACK_RETRY_MINUTES",
                                                    "120,1440")),
            callback_attempts=_number(env, "HOTLINE_CALLBACK_ATTEMPTS", int, "3"),
            audio_store=env.get("HOTLINE_AUDIO_STORE", "folder").strip().lower() or "folder",
            recording_catchup_hours=_number(env, "HOTLINE_RECORDING_CATCHUP_HOURS", int, "24"),
            backup_dir=(Path(env["HOTLINE_BACKUP_DIR"]).resolve()
                        if env.get("HOTLINE_BACKUP_DIR", "").strip() else None),
            backup_keep=_number(env, "HOTLINE_BACKUP_KEEP", int, "7"),
            receipt_sms=(_flag(env["HOTLINE_RECEIPT_SMS"])
                         if env.get("HOTLINE_RECEIPT_SMS", "").strip() else not demo),
        )

    def override(self, **changes: Any) -> Settings:
        """Return a copy with some settings replaced (tests apply theirs last)."""
        return replace(self, **changes)

    @property
    def work_calendar(self) -> WorkCalendar:
        """Which days count in "N working days" (HOTLINE_HOLIDAYS)."""
        return WorkCalendar(self.holidays)

    @property
    def audio_dir(self) -> Path:
        """Folder where downloaded recordings are kept (never under the web root)."""
        return self.data_dir / "audio"

    @property
    def prompts_dir(self) -> Path:
        """Folder of prompt audio: recorded by people, or rendered with espeak-ng."""
        return self.data_dir / "prompts"

    @property
    def models_dir(self) -> Path:
        """Folder with one Vosk model folder per language (`kk/`, `ru/`)."""
        return self.data_dir / "models"

    @property
    def jobs_file(self) -> Path:
        """SQLite file of the default job queue."""
        return self.data_dir / "jobs.sqlite3"

    def make_data_dir(self) -> Path:
        """Create the data folder if it is missing, readable by this user only (mode 0700):
        it holds the database, residents' recordings and the key. One that exists is left as
        the operator made it."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.data_dir

    def ensure_secret_key(self) -> str:
        """Return SECRET_KEY, generating one into the data folder on first run (mode 0600
        from its creation)."""
        self.make_data_dir()
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            # Written whole under a name of this process's own, then linked into place: a
            # process that starts at the same moment finds either no key or the whole key,
            # never an empty file (an empty key would sign sessions and pseudonyms with "").
            draft = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
            descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(descriptor, "w") as key_file:
                    key_file.write(secrets.token_hex(32))
                    key_file.flush()
                    os.fsync(key_file.fileno())
                try:
                    os.link(draft, path)
                except FileExistsError:
                    pass  # another process made it a moment ago: theirs it is
            finally:
                draft.unlink()
        return path.read_text().strip()

    def check(self) -> None:
        """Refuse settings that cannot serve Twilio safely."""
        if not self.twilio_auth_token:
            raise ConfigError(
                "TWILIO_AUTH_TOKEN is not set: webhooks cannot be verified. "
                "Set it, or HOTLINE_DEMO=1 to try the hotline without a Twilio account."
            )
        # deploy/hotline.env.example's placeholders, left in: a SECRET_KEY that is published
        # would let anyone sign a consultant's session.
        left = [name for name, value in (("SECRET_KEY", self.secret_key),
                                         ("TWILIO_AUTH_TOKEN", self.twilio_auth_token),
                                         ("TWILIO_ACCOUNT_SID", self.twilio_account_sid))
                if PLACEHOLDER in value or value == EXAMPLE_ACCOUNT_SID]
        if left:
            raise ConfigError(
                f"{', '.join(left)} still hold the example's placeholder: fill them in "
                "(a SECRET_KEY: python3 -c 'import secrets; print(secrets.token_hex(32))').")
        if not 2 <= self.callback_days <= 10:
            # The promise is spoken as a word; the content has forms for 2 to 10.
            raise ConfigError("HOTLINE_CALLBACK_DAYS must be between 2 and 10.")
        start, end = self.callback_hours
        if not 0 <= start < end <= 24:
            raise ConfigError("HOTLINE_CALLBACK_HOURS must be two hours of the day, the first "
                              "before the second, like 9-20 (Almaty time).")
        if not self.callback_retry_minutes or min(self.callback_retry_minutes) < 1:
            raise ConfigError("HOTLINE_CALLBACK_RETRY_MINUTES needs at least one delay of a "
                              "minute or more.")
        if not 1 <= self.callback_attempts <= 10:
            raise ConfigError("HOTLINE_CALLBACK_ATTEMPTS must be between 1 and 10.")
        if self.recording_catchup_hours < 0:
            raise ConfigError("HOTLINE_RECORDING_CATCHUP_HOURS must be 0 (off) or more hours.")
        if self.holidays is not None and self.holidays not in supported_countries():
            raise ConfigError(f"HOTLINE_HOLIDAYS: no holiday calendar for {self.holidays!r}; "
                              "give a country code such as KZ, or none for Monday to Friday.")
        if self.backup_keep < 1:
            # Keeping no snapshot would be no backup, found out at 03:00.
            raise ConfigError(f"HOTLINE_BACKUP_KEEP must be 1 or more, not {self.backup_keep}.")
        if self.audio_store not in ("folder", "database"):
            raise ConfigError("HOTLINE_AUDIO_STORE must be folder (the data folder's audio/) "
                              f"or database (the audio_blobs table), not {self.audio_store!r}.")


# What deploy/hotline.env.example has where an operator must put their own value.
PLACEHOLDER = "replace-with-"
EXAMPLE_ACCOUNT_SID = "AC" + "x" * 32
# Its examples of an operator's own values: the app starts with them (the tests' settings use
# the same address) but warns (hotline.app), as every call would then fail.
EXAMPLE_PUBLIC_BASE_URL = "https://hotline.example.kz"
EXAMPLE_PHONE_NUMBER = "+77170000000"


@cache
def read_dotenv() -> None:
    """Read a `.env` file into the environment once per process (what is set already wins).

    Found from the working folder upwards, as the `flask`/`hotline` command finds it: the web
    process (gunicorn), the worker and the commands read the same file, and read it before the
    job queue is made (hotline.jobs builds it from the environment when it is imported).
    """
    load_dotenv(find_dotenv(usecwd=True))
