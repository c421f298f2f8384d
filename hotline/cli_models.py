"""`hotline models`: install the published Vosk models and show which ones the hotline reads."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import click

from speech.install import (
    CATALOGUE,
    DEFAULT_URL_BASE,
    LANGUAGES,
    InstalledModel,
    ModelInstallError,
    install_model,
    list_models,
    read_checksums,
)

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar


def _models_dir() -> Path:
    """Return the models folder inside the hotline's data folder. On a fresh machine this
    is often the first command: it makes the data folder as the hotline does (mode 0700,
    config.Settings.make_data_dir), since the database and recordings go there next."""
    data = Path(os.environ.get("HOTLINE_DATA_DIR", "instance")).resolve()
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    return data / "models"


def _override(language: str) -> Path | None:
    """Return the model folder set for a language by VOSK_MODEL_<LANG>, if any."""
    value = os.environ.get(f"VOSK_MODEL_{language.upper()}")
    return Path(value) if value else None


@click.group()
def models() -> None:
    """Speech-recognition models (Vosk), one per language."""


@models.command("install")
@click.argument("languages", metavar="LANG...", nargs=-1, required=True,
                type=click.Choice(LANGUAGES))
@click.option("--url-base", envvar="VOSK_MODEL_URL_BASE", default=DEFAULT_URL_BASE,
              show_default=True, show_envvar=True,
              help="Where the zips are published; each is fetched as <base>/<name>.zip.")
@click.option("--sha256", "sha256", metavar="HEX", help="The zip's SHA-256 (with one LANG only).")
@click.option("--checksums", type=click.Path(dir_okay=False, path_type=Path),
              help="A sha256sum file: `<hex>  <name>.zip` lines (--allow-unverified prints "
                   "them the first time).")
@click.option("--allow-unverified", is_flag=True,
              help="Install without a pinned SHA-256, and print the hash to pin.")
@click.option("--force", is_flag=True, help="Replace a model that is already installed.")
def install(languages: tuple[str, ...], url_base: str, sha256: str | None,
            checksums: Path | None, allow_unverified: bool, force: bool) -> None:
    """Download, verify and install the models of the given languages."""
    if sha256 and len(set(languages)) != 1:
        raise click.UsageError("--sha256 goes with one LANG; use --checksums for several")
    if sha256 and checksums:
        raise click.UsageError("give --sha256 or --checksums, not both")
    pinned = {}
    if checksums is not None:
        if not checksums.is_file():
            # The hints for a missing model name this file; none ships with the project.
            raise click.BadParameter(
                f"{checksums} does not exist. The first time, install with --allow-unverified "
                "on a network you trust: it prints one `<sha256>  <file>` line per model; "
                f"save them as {checksums} for the other machines.", param_hint="'--checksums'")
        try:
            pinned = read_checksums(checksums)
        except ModelInstallError as exc:
            raise click.ClickException(str(exc)) from exc
    models_dir = _models_dir()
    failed = False
    for language in dict.fromkeys(languages):
        entry = CATALOGUE[language]
        try:
            with _DownloadBar(f"{language}: {entry.archive}", entry.approx_size) as bar:
                result = install_model(
                    language, models_dir, url_base=url_base,
                    sha256=sha256 or pinned.get(entry.archive),
                    allow_unverified=allow_unverified, force=force, progress=bar,
                )
        except ModelInstallError as exc:
            click.echo(f"error: {language}: {exc}", err=True)
            failed = True
            continue
        _report(result, entry.archive)
    if failed:
        raise SystemExit(1)


def _report(result: InstalledModel, archive: str) -> None:
    """Say what happened to one language's model."""
    language = result.language
    if result.already_installed:
        click.echo(f"{language}: already installed at {result.path} ({result.name or 'unknown'}); "
                   "use --force to replace it")
    elif result.verified:
        click.echo(f"{language}: installed {result.name} at {result.path} (SHA-256 verified)")
    else:
        click.echo(f"{language}: installed {result.name} at {result.path} "
                   "(SHA-256 NOT verified); pin this line in a --checksums file:")
        click.echo(f"{result.sha256}  {archive}")
    override = _override(language)
    if override is not None and override.resolve() != result.path.resolve():
        click.echo(f"note: VOSK_MODEL_{language.upper()} is set, so the hotline reads "
                   f"{override}, not {result.path}", err=True)


@models.command("list")
def list_command() -> None:
    """Show per language the model folder the hotline reads and what is in it."""
    overrides = {language: _override(language) for language in LANGUAGES}
    for status in list_models(_models_dir(), overrides):
        if status.installed:
            state = "installed"
        elif status.path.exists():
            state = "not-a-model"
        else:
            state = "missing"
        rate = f"{status.sample_rate}Hz" if status.sample_rate else "-"
        click.echo(f"{status.language}  {status.path}  {state}  {status.name or '-'}  {rate}")


class _DownloadBar:
    """A progress bar on stderr, sized once the download's length is known."""

    def __init__(self, label: str, expected: int) -> None:
        self._label = label
        self._expected = expected
        self._stack = ExitStack()
        self._bar: ProgressBar[int] | None = None
        self._shown = 0

    def __enter__(self) -> _DownloadBar:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stack.close()

    def __call__(self, received: int, total: int | None) -> None:
        """Advance the bar to received bytes."""
        if self._bar is None:
            self._bar = self._stack.enter_context(click.progressbar(
                length=total or self._expected, label=self._label, file=sys.stderr,
            ))
        self._bar.update(received - self._shown)
        self._shown = received
