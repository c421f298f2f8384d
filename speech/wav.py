"""Read WAV files: the header first (to refuse bad or overlong files early), then the samples.

The stdlib `wave` module of Python 3.11 reads only plain 8/16-bit PCM: sox, Audacity and field
recorders write 24-bit, 32-bit, float and multi-channel files as WAVE_FORMAT_EXTENSIBLE or
IEEE float, which it refuses. This reader takes all of them, and words its errors for people.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from speech.errors import AudioError

PCM = 0x0001
IEEE_FLOAT = 0x0003
EXTENSIBLE = 0xFFFE
ENCODING_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "μ-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0055: "MP3",
}
# Streaming writers that cannot seek back put this in the data size: "until the end of file".
UNKNOWN_SIZE = 0xFFFFFFFF


@dataclass(frozen=True)
class WavFormat:
    """What a WAV header says about the audio that follows it."""

    encoding: int  # PCM or IEEE_FLOAT
    channels: int
    rate: int
    sample_bits: int
    data_offset: int
    data_size: int  # as the header says
    data_present: int  # as the file holds: less when the file is cut short

    @property
    def frame_bytes(self) -> int:
        """Return the size of one frame: a sample of every channel."""
        return self.channels * self.sample_bits // 8

    @property
    def frames(self) -> int:
        """Return the number of frames the header promises."""
        return self.data_size // self.frame_bytes

    @property
    def seconds(self) -> float:
        """Return the length the header promises, in seconds."""
        return self.frames / self.rate

    @property
    def seconds_present(self) -> float:
        """Return the length of the audio the file really holds, in seconds."""
        return self.data_present // self.frame_bytes / self.rate

    @property
    def is_pcm16(self) -> bool:
        """Tell whether the samples are already signed 16-bit little-endian integers."""
        return self.encoding == PCM and self.sample_bits == 16


class UnsupportedEncoding(AudioError):
    """A well-formed WAV whose encoding this reader does not decode (ffmpeg may)."""


def is_wav(head: bytes) -> bool:
    """Tell whether the first bytes of a file are a RIFF WAVE header."""
    return len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def read_header(stream: BinaryIO, name: str, file_size: int) -> WavFormat:
    """Read the header of a WAV file up to its audio data (raises AudioError)."""
    head = stream.read(12)
    if not is_wav(head):
        raise AudioError(f"{name} is not a WAV file (no RIFF/WAVE header)")
    fmt: tuple[int, int, int, int] | None = None
    position = 12
    while True:
        chunk = stream.read(8)
        if len(chunk) < 8:
            if fmt is None:
                raise AudioError(f"{name} is a damaged WAV file: the format header is missing")
            raise AudioError(f"{name} is a damaged WAV file: it has no audio data chunk")
        chunk_id, size = struct.unpack("<4sI", chunk)
        position += 8
        if chunk_id == b"fmt ":
            fmt = _read_fmt(stream.read(size), name)
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioError(f"{name} is a damaged WAV file: audio data before its format")
            present = max(file_size - position, 0)
            if size == UNKNOWN_SIZE:
                size = present
            encoding, channels, rate, bits = fmt
            frame_bytes = channels * bits // 8
            size -= size % frame_bytes
            return WavFormat(encoding, channels, rate, bits, position, size, min(size, present))
        # Chunks are padded to an even length.
        position += size + size % 2
        stream.seek(position)


def _read_fmt(body: bytes, name: str) -> tuple[int, int, int, int]:
    if len(body) < 16:
        raise AudioError(f"{name} is a damaged WAV file: its format header is cut short")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == EXTENSIBLE:
        if len(body) < 26:
            raise AudioError(f"{name} is a damaged WAV file: its format header is cut short")
        # The real encoding is the first two bytes of the sub-format GUID.
        (tag,) = struct.unpack("<H", body[24:26])
    if tag not in (PCM, IEEE_FLOAT):
        encoding = ENCODING_NAMES.get(tag, f"format code 0x{tag:04x}")
        raise UnsupportedEncoding(
            f"{name} is a WAV file encoded as {encoding}, which can only be read with ffmpeg; "
            "install ffmpeg, or convert the file to 16-bit PCM WAV"
        )
    supported = (8, 16, 24, 32) if tag == PCM else (32, 64)
    kind = "integer" if tag == PCM else "floating-point"
    if bits not in supported:
        raise UnsupportedEncoding(
            f"{name} is a WAV file with {bits}-bit {kind} samples, which cannot be read; "
            "convert it to 16-bit PCM WAV"
        )
    if channels == 0 or rate == 0 or block_align != channels * bits // 8:
        raise AudioError(
            f"{name} is a damaged WAV file: its format header is inconsistent "
            f"({channels} channels, {rate} Hz, {bits}-bit, {block_align} bytes per frame)"
        )
    return tag, channels, rate, bits


def read_samples(stream: BinaryIO, fmt: WavFormat) -> bytes:
    """Read the audio data that follows the header, whole frames only."""
    stream.seek(fmt.data_offset)
    data = stream.read(fmt.data_present)
    return data[: len(data) - len(data) % fmt.frame_bytes]


def read_blocks(stream: BinaryIO, fmt: WavFormat, frames: int) -> Iterator[bytes]:
    """Yield the audio data in blocks of whole frames, at most this many frames each."""
    stream.seek(fmt.data_offset)
    remaining = fmt.data_present
    while remaining > 0:
        data = stream.read(min(frames * fmt.frame_bytes, remaining))
        if not data:
            return
        remaining -= len(data)
        whole = len(data) - len(data) % fmt.frame_bytes
        if whole:
            yield data[:whole]


def to_float(data: bytes, fmt: WavFormat) -> npt.NDArray[np.float32]:
    """Return the samples as float32 in [-1, 1], one row per frame, one column per channel."""
    bits = fmt.sample_bits
    samples: npt.NDArray[np.float32]
    if fmt.encoding == IEEE_FLOAT:
        raw = np.frombuffer(data, dtype="<f4" if bits == 32 else "<f8")
        samples = np.clip(np.nan_to_num(raw), -1.0, 1.0).astype(np.float32)
    elif bits == 8:
        # 8-bit WAV is the one unsigned format: silence is 128.
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 24:
        triplets = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = triplets[:, 0] | (triplets[:, 1] << 8) | (triplets[:, 2] << 16)
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
        samples = values.astype(np.float32) / float(1 << 23)
    else:
        dtype = "<i2" if bits == 16 else "<i4"
        scale = float(1 << (bits - 1))
        samples = (np.frombuffer(data, dtype=dtype).astype(np.float64) / scale).astype(np.float32)
    return samples.reshape(-1, fmt.channels)
