"""Decode a recording offline with Vosk into a transcript: text, timed words, confidence."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speech.audio import load_pcm
from speech.errors import NoSpeech
from speech.models import LoadedModel, ModelRegistry, language_name

# Bytes fed to the recognizer at a time, as `vosk-transcriber` does: the same chunks give the
# same endpointing, hence the same text, as that command with the same model.
CHUNK_BYTES = 4000


@dataclass(frozen=True)
class Word:
    """A recognised word, its start and end in seconds, and the model's confidence (0..1)."""

    word: str
    start: float
    end: float
    conf: float


@dataclass(frozen=True)
class Transcript:
    """What a model heard in one recording."""

    text: str
    words: tuple[Word, ...]
    confidence: float  # mean word confidence, 0.0 without words
    duration: float  # seconds of audio
    model: str
    language: str
    elapsed: float  # seconds spent decoding, model loading excluded

    def to_dict(self) -> dict[str, Any]:
        """Return the transcript as plain JSON-ready values."""
        return {
            "text": self.text,
            "words": [
                {"word": w.word, "start": w.start, "end": w.end, "conf": w.conf}
                for w in self.words
            ],
            "confidence": self.confidence,
            "duration": self.duration,
            "model": self.model,
            "language": self.language,
            "elapsed": self.elapsed,
        }


def transcribe_pcm(model: LoadedModel, pcm: bytes, duration: float) -> Transcript:
    """Decode mono 16-bit PCM at the model's sample rate (raises NoSpeech when nothing is heard)."""
    from vosk import KaldiRecognizer

    started = time.perf_counter()
    # A recognizer holds decoding state: one per transcription, never shared between threads.
    recognizer = KaldiRecognizer(model.model, model.sample_rate)
    recognizer.SetWords(True)
    results: list[dict[str, Any]] = []
    for offset in range(0, len(pcm), CHUNK_BYTES):
        if recognizer.AcceptWaveform(pcm[offset : offset + CHUNK_BYTES]):
            results.append(json.loads(recognizer.Result()))
    results.append(json.loads(recognizer.FinalResult()))
    elapsed = time.perf_counter() - started

    # vosk-transcriber's txt output puts each utterance on a line; a transcript is one line.
    text = " ".join(part["text"] for part in results if part.get("text"))
    words = tuple(
        Word(
            word=str(item["word"]),
            start=float(item["start"]),
            end=float(item["end"]),
            conf=float(item["conf"]),
        )
        for part in results
        for item in part.get("result", ())
    )
    if not text:
        raise NoSpeech(
            f"no speech was recognised in the recording ({duration:.1f} s): it may be silent, "
            f"or not in {language_name(model.language)}"
        )
    confidence = sum(w.conf for w in words) / len(words) if words else 0.0
    return Transcript(
        text=text,
        words=words,
        confidence=confidence,
        duration=duration,
        model=model.name,
        language=model.language,
        elapsed=elapsed,
    )


def transcribe_file(model: LoadedModel, path: Path) -> Transcript:
    """Read a recording at the model's sample rate and decode it."""
    pcm, duration = load_pcm(path, model.sample_rate)
    return transcribe_pcm(model, pcm, duration)


class Transcriber:
    """Transcribes recordings with the registry's model for their language."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def transcribe(self, path: Path, language: str) -> Transcript:
        """Transcribe a recording with the model of its language (raises SpeechError)."""
        return transcribe_file(self.registry.get(language), path)
