"""Prompt audio: files recorded by people win; missing Kazakh ones are rendered with espeak-ng."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from flows.engine import Prompt

log = logging.getLogger(__name__)

# espeak-ng voices for the content languages; 120 words a minute is slow and clear.
ESPEAK_VOICES = {"kk": "kk", "ru": "ru"}
DEFAULT_RATE = 120
# Versions remembered (a few per prompt at most: the content has a few hundred prompts).
MAX_VERSIONS = 4096


class PromptRenderError(Exception):
    """espeak-ng or sox is missing or failed."""


class PromptLibrary:
    """Audio files for prompts under one folder: `<lang>/<key>.wav` or `<lang>/<key>-<hash>.wav`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # A file's version by (path, size, mtime): read again only when the file changes.
        self._versions: dict[tuple[Path, int, int], str] = {}

    def version(self, path: Path) -> str:
        """A short digest of the file's bytes, for its URL (?v=): a recording made again, or
        a prompt rendered again with --force, gets another URL, so Twilio may cache the audio
        at a URL for as long as it likes (voice.prompt_audio) and never plays stale audio."""
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        version = self._versions.get(key)
        if version is None:
            version = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
            if len(self._versions) > MAX_VERSIONS:
                self._versions.clear()
            self._versions[key] = version
        return version

    def recorded_path(self, prompt: Prompt) -> Path:
        """Where a person's recording of this prompt goes."""
        return self.directory / prompt.language / f"{prompt.key}.wav"

    def recorded_text_path(self, prompt: Prompt) -> Path:
        """Where the text the person read goes, beside the recording (`<key>.txt`)."""
        return self.directory / prompt.language / f"{prompt.key}.txt"

    def rendered_path(self, prompt: Prompt) -> Path:
        """Where the synthesised audio of this exact text goes."""
        return self.directory / prompt.language / prompt.audio_name

    def recording_state(self, prompt: Prompt) -> str:
        """A person's recording of the prompt: "none", "current" (made for this text),
        "outdated" (its text file says another text: the content changed since), or
        "unlabelled" (no text file beside it: played whatever the text says)."""
        if not self.recorded_path(prompt).is_file():
            return "none"
        try:
            read = self.recorded_text_path(prompt).read_text(encoding="utf-8")
        except FileNotFoundError:
            return "unlabelled"
        except (OSError, UnicodeDecodeError):
            return "outdated"  # unreadable: not known to say what the content says
        return "current" if _same_text(read, prompt.text) else "outdated"

    def file_for(self, prompt: Prompt) -> Path | None:
        """Return the audio file to play for prompt, or None when there is none yet.

        A person's recording wins, unless its text file shows it was made for another text:
        after the lawyers correct an explainer, the old recording would go on telling callers
        the old law, so the current text's rendered audio plays until it is recorded again.
        """
        if self.recording_state(prompt) in ("current", "unlabelled"):
            return self.recorded_path(prompt)
        rendered = self.rendered_path(prompt)
        return rendered if rendered.is_file() else None

    def add_recording(self, prompt: Prompt, wav: Path) -> Path:
        """Install a person's recording of prompt, with the text it was made for."""
        with wav.open("rb") as audio:
            header = audio.read(12)
        if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            raise PromptRenderError(f"{wav} is not a WAV file")
        target = self.recorded_path(prompt)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            copy, text = Path(tmp) / target.name, Path(tmp) / "text.txt"
            shutil.copyfile(wav, copy)
            text.write_text(prompt.text + "\n", encoding="utf-8")
            # The audio first: stopped in between, the new audio beside the old text is
            # "outdated" and not played, never old audio passed off as the new text.
            copy.replace(target)
            text.replace(self.recorded_text_path(prompt))
        return target

    def render_missing(
        self, prompts: Iterable[Prompt], *, force: bool = False, rate: int = DEFAULT_RATE
    ) -> list[Path]:
        """Synthesise every prompt that has no audio yet; return the files written.

        espeak-ng and sox are needed only when something is to be rendered: a machine where
        every prompt has audio (people's recordings, say) renders nothing and needs neither.
        Where one is missing, the error is one line naming the missing ones and the Debian
        packages to install (`hotline prompts render` prints it as its error, exit 1).
        """
        todo = [p for p in prompts if force or self.file_for(p) is None]
        if not todo:
            return []
        espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
        if not espeak or not sox:
            missing = [name for name, found in (("espeak-ng", espeak), ("sox", sox)) if not found]
            raise PromptRenderError(
                f"espeak-ng and sox are needed to render prompts; not found on PATH: "
                f"{' and '.join(missing)} (Debian: apt-get install espeak-ng sox)"
            )
        written = []
        for prompt in todo:
            target = self.rendered_path(prompt)
            voice = ESPEAK_VOICES.get(prompt.language)
            if voice is None:
                raise PromptRenderError(f"no espeak-ng voice for language {prompt.language}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                raw = Path(tmp) / "raw.wav"
                out = Path(tmp) / "out.wav"
                _run([espeak, "-v", voice, "-s", str(rate), "-w", str(raw), prompt.speech])
                # Telephone audio: 8 kHz mono 16-bit, with a short pause after each sentence.
                _run([sox, str(raw), "-r", "8000", "-c", "1", "-b", "16", str(out),
                      "pad", "0", "0.4"])
                out.replace(target)
            written.append(target)
        return written


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PromptRenderError(f"{Path(command[0]).name} failed: {result.stderr.strip()}")


def _same_text(one: str, other: str) -> bool:
    """The same words, whatever the spacing and line breaks."""
    return one.split() == other.split()
