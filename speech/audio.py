"""Turn a recording into what a model hears: mono 16-bit PCM at the model's sample rate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import soxr

from speech.errors import AudioError, SpeechError
from speech.wav import (
    UnsupportedEncoding,
    WavFormat,
    is_wav,
    read_blocks,
    read_header,
    read_samples,
    to_float,
)

# Twilio recordings last at most 120 s; anything far longer is a mistake, not a question.
MAX_SECONDS = 15 * 60
# Decoding even a long MP3 takes seconds; a hung ffmpeg must not block a worker for ever.
FFMPEG_TIMEOUT = 300
# Frames converted at a time: about a second of studio audio, a few MB as floats.
BLOCK_FRAMES = 1 << 16
# First bytes of formats ffmpeg reads and this module does not.
SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"ID3", 0, "MP3"),
    (b"OggS", 0, "Ogg"),
    (b"fLaC", 0, "FLAC"),
    (b"ftyp", 4, "MP4/M4A"),
    (b"#!AMR", 0, "AMR"),
    (b"\x1a\x45\xdf\xa3", 0, "WebM"),
    (b"FORM", 0, "AIFF"),
    (b"caff", 0, "CAF"),
    (b"RF64", 0, "RF64 WAV"),
)


def load_pcm(path: Path, target_rate: int, max_seconds: float = MAX_SECONDS) -> tuple[bytes, float]:
    """Read a recording as mono signed 16-bit little-endian PCM at target_rate, with its length."""
    name = path.name
    try:
        with path.open("rb") as stream:
            size = path.stat().st_size
            head = stream.read(16)
            if size == 0:
                raise AudioError(f"{name} is empty (0 bytes): there is no recording in it")
            if not is_wav(head):
                return _load_other(path, head, target_rate, max_seconds)
            stream.seek(0)
            fmt = read_header(stream, name, size)
            _check_length(name, fmt, max_seconds)
            if fmt.is_pcm16 and fmt.channels == 1 and fmt.rate == target_rate:
                # Already what the model wants: pass it through untouched.
                pcm = read_samples(stream, fmt)
            else:
                pcm = _convert(stream, fmt, target_rate)
    except UnsupportedEncoding:
        if shutil.which("ffmpeg") is None:
            raise
        return _ffmpeg(path, target_rate, max_seconds)
    except OSError as exc:
        # Not permanent: a missing or unreadable file may be a download still in progress.
        raise SpeechError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return pcm, fmt.frames / fmt.rate


def describe_length(seconds: float) -> str:
    """Say how long a recording is, the way a person would ("2 h 5 min", "3 min 20 s")."""
    whole = round(seconds)
    if whole >= 3600:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    if whole >= 60:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    return f"{seconds:.1f} s"


def _check_length(name: str, fmt: WavFormat, max_seconds: float) -> None:
    if fmt.frames == 0:
        raise AudioError(f"{name} has no audio in it (a WAV header with 0 samples)")
    if fmt.seconds > max_seconds:
        raise AudioError(
            f"{name}: recording is {describe_length(fmt.seconds)} long; "
            f"the limit is {describe_length(max_seconds)}"
        )
    if fmt.data_present < fmt.data_size:
        raise AudioError(
            f"{name} is cut short: its header promises {describe_length(fmt.seconds)} of audio "
            f"but the file holds {describe_length(fmt.seconds_present)}; fetch it again"
        )


def _convert(stream: BinaryIO, fmt: WavFormat, target_rate: int) -> bytes:
    # Block by block, so that a long 48 kHz multi-channel file never sits in memory as floats.
    resampler = None
    if fmt.rate != target_rate:
        resampler = soxr.ResampleStream(fmt.rate, target_rate, 1, dtype="float32", quality="HQ")
    blocks = []
    for data in read_blocks(stream, fmt, BLOCK_FRAMES):
        mono = to_float(data, fmt).mean(axis=1, dtype=np.float32)
        if resampler is not None:
            mono = resampler.resample_chunk(mono)
        blocks.append(_to_pcm16(mono))
    if resampler is not None:
        blocks.append(_to_pcm16(resampler.resample_chunk(np.zeros(0, np.float32), last=True)))
    return b"".join(blocks)


def _to_pcm16(samples: npt.NDArray[np.float32]) -> bytes:
    scaled = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
    return bytes(scaled.tobytes())


def _load_other(
    path: Path, head: bytes, target_rate: int, max_seconds: float
) -> tuple[bytes, float]:
    name = path.name
    kind = _sniff(head)
    if kind == "text":
        raise AudioError(f"{name} is a text file, not a recording")
    if shutil.which("ffmpeg") is not None:
        return _ffmpeg(path, target_rate, max_seconds)
    if kind is None:
        raise AudioError(
            f"{name} is not a WAV file and not any known audio format (it may be damaged); "
            "install ffmpeg to read MP3 and other formats"
        )
    raise AudioError(
        f"{name} is not a WAV file (it looks like {kind}); install ffmpeg to read MP3 and "
        "other formats, or convert it to WAV"
    )


def _sniff(head: bytes) -> str | None:
    for signature, offset, kind in SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return kind
    # An MPEG audio frame without an ID3 tag starts with 11 set sync bits.
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "MP3"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the sample; that is still text.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    if text and all(ch.isprintable() or ch.isspace() for ch in text):
        return "text"
    return None


def _ffmpeg(path: Path, target_rate: int, max_seconds: float) -> tuple[bytes, float]:
    # "file:" keeps a name with a colon from being taken for a protocol; -t bounds the work.
    command = [
        "ffmpeg", "-nostdin", "-v", "error", "-i", f"file:{path}", "-t", str(max_seconds + 1),
        "-ar", str(target_rate), "-ac", "1", "-f", "s16le", "-",
    ]
    try:
        done = subprocess.run(command, capture_output=True, timeout=FFMPEG_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SpeechError(f"ffmpeg took over {FFMPEG_TIMEOUT} s to decode {path.name}") from exc
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = reason[-1] if reason else f"exit code {done.returncode}"
        raise AudioError(f"{path.name} could not be decoded (ffmpeg: {detail}); it may be damaged")
    pcm = done.stdout[: len(done.stdout) - len(done.stdout) % 2]
    seconds = len(pcm) / 2 / target_rate
    if not pcm:
        raise AudioError(f"{path.name} has no audio in it")
    if seconds > max_seconds:
        raise AudioError(
            f"{path.name}: recording is longer than {describe_length(max_seconds)}, the limit"
        )
    return pcm, seconds
