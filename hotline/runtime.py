"""What a web process or a worker needs at hand: settings, database, the phone tree, prompts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from flows.content import load_content
from flows.engine import Flow
from flows.sms import SmsDialogue
from hotline.config import Settings
from hotline.prompts import PromptLibrary
from hotline.twiml import RenderedDocuments
from speech.models import registry_from_folder
from speech.transcriber import Transcriber
from storage.audio_store import AudioStore, open_audio_store
from storage.db import make_engine, make_session_factory, make_webhook_engine

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Long-lived objects shared by requests and jobs of one process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    flow: Flow
    prompts: PromptLibrary
    speech: Transcriber
    sms: SmsDialogue
    # Recordings' audio: the audio folder or the database, as HOTLINE_AUDIO_STORE says.
    audio: AudioStore
    # The voice menus' non-durable transactions (storage.db.make_webhook_engine): on SQLite the
    # engine itself, on PostgreSQL a second pool.
    webhook_engine: Engine
    # The key of callers' pseudonyms (storage.retention.pseudonym): SECRET_KEY.
    pseudonym_key: bytes
    # TwiML documents the voice webhooks answered lately (most calls hear the same few).
    documents: RenderedDocuments = field(default_factory=RenderedDocuments)

    def dispose(self) -> None:
        """Close the database pools (the webhooks' too)."""
        self.engine.dispose()
        if self.webhook_engine is not self.engine:
            self.webhook_engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    """Check settings and content, and connect to the database (raises on invalid content)."""
    settings.check()
    content = load_content(settings.content_dir)
    for warning in content.warnings:
        log.warning("content: %s (hotline flows check)", warning)
    flow = Flow(content, callback_days=settings.callback_days)
    settings.make_data_dir()  # before the SQLite file's folder is made: this user's only
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        flow=flow,
        prompts=PromptLibrary(settings.prompts_dir),
        # Models load lazily, once per process, on the first question in their language.
        speech=Transcriber(registry_from_folder(
            settings.models_dir, {"kk": settings.vosk_model_kk, "ru": settings.vosk_model_ru})),
        sms=SmsDialogue(content, callback_days=settings.callback_days),
        audio=open_audio_store(settings.audio_store, folder=settings.audio_dir,
                               sessions=sessions),
        webhook_engine=make_webhook_engine(settings.database_url, engine),
        pseudonym_key=settings.ensure_secret_key().encode(),
    )
