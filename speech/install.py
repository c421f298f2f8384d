"""Install the published Vosk models: download, verify, unpack, then swap into place atomically."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import requests

from speech.models import looks_like_model, model_sample_rate

DEFAULT_URL_BASE = "https://alphacephei.com/vosk/models"
LANGUAGES = ("kk", "ru")
RECEIPT = ".installed.json"
# Every scratch file and folder of an install starts with this; the hotline ignores dot-names.
TEMP_PREFIX = ".tmp-install-"
MB = 1 << 20
# Below this a download is an error page or an empty file, whatever the server says.
MIN_DOWNLOAD_BYTES = 1 * MB
# The upper bound is a guard against filling the disk, not an integrity check (SHA-256 is):
# generous over the published size, tight enough to stop a wrong URL early.
MAX_DOWNLOAD_FACTOR = 4
# A model unpacks to a few times its zip; far more than that is a zip bomb.
MAX_UNPACKED_FACTOR = 10
CHUNK_BYTES = 1 * MB
TIMEOUT = (15, 60)  # seconds to connect, seconds between received bytes

Progress = Callable[[int, int | None], None]


class ModelInstallError(Exception):
    """A model could not be downloaded, verified or installed; nothing was changed."""


@dataclass(frozen=True)
class CatalogueEntry:
    """A published Vosk model: its language, name and approximate zip size."""

    language: str
    name: str
    approx_size: int
    sha256: str | None

    @property
    def archive(self) -> str:
        """Return the zip's file name, as published and as listed in checksum files."""
        return f"{self.name}.zip"


# sha256 is None for both: this machine reaches no site but package registries, so the zips'
# real SHA-256 could not be computed or checked here. Operators pin them with --sha256 or
# --checksums (or install once with --allow-unverified and pin the hash it prints).
CATALOGUE: dict[str, CatalogueEntry] = {
    "kk": CatalogueEntry("kk", "vosk-model-small-kz-0.15", 42 * MB, sha256=None),
    "ru": CatalogueEntry("ru", "vosk-model-small-ru-0.22", 45 * MB, sha256=None),
}


@dataclass(frozen=True)
class InstalledModel:
    """The model now at a language's folder, and whether this run put it there."""

    language: str
    path: Path
    name: str | None
    sha256: str | None
    verified: bool
    already_installed: bool


@dataclass(frozen=True)
class ModelStatus:
    """What a language's model folder holds."""

    language: str
    path: Path
    installed: bool
    name: str | None
    sha256: str | None
    sample_rate: int | None


def install_model(
    language: str,
    models_dir: Path,
    *,
    url_base: str,
    sha256: str | None,
    allow_unverified: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    min_bytes: int = MIN_DOWNLOAD_BYTES,
    max_bytes: int | None = None,
) -> InstalledModel:
    """Download, verify and install a language's model at <models_dir>/<language>."""
    entry = _catalogue_entry(language)
    pinned = _parse_sha256(sha256) if sha256 else entry.sha256
    url = f"{url_base.rstrip('/')}/{entry.archive}"
    target = models_dir / language
    limit = max_bytes if max_bytes is not None else MAX_DOWNLOAD_FACTOR * entry.approx_size
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(models_dir):
            _remove_leftovers(models_dir)
            if not force and os.path.lexists(target):
                return _already_installed(language, target)
            if pinned is None and not allow_unverified:
                raise ModelInstallError(
                    f"no SHA-256 is pinned for {entry.archive}: pass --sha256 HEX or --checksums "
                    "FILE from a source you trust, or --allow-unverified to install it anyway"
                )
            scratch = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{language}-", dir=models_dir))
            try:
                digest = _fetch_and_place(entry, url, target, scratch, pinned=pinned,
                                          min_bytes=min_bytes, max_bytes=limit, progress=progress)
            finally:
                _remove(scratch)
    except OSError as exc:
        message = f"cannot install the {language} model in {models_dir}: {exc}"
        raise ModelInstallError(message) from exc
    return InstalledModel(language, target, entry.name, digest, pinned is not None, False)


def list_models(models_dir: Path, overrides: Mapping[str, Path | None]) -> list[ModelStatus]:
    """Describe the model folder the hotline reads for each language."""
    statuses = []
    for language in LANGUAGES:
        path = overrides.get(language) or models_dir / language
        installed = looks_like_model(path)
        receipt = _read_receipt(path)
        statuses.append(ModelStatus(
            language=language,
            path=path,
            installed=installed,
            name=_str_or_none(receipt.get("name")),
            sha256=_str_or_none(receipt.get("sha256")),
            sample_rate=model_sample_rate(path) if installed else None,
        ))
    return statuses


def read_checksums(path: Path) -> dict[str, str]:
    """Read a `sha256sum` file into a map from file name to lowercase SHA-256."""
    sums: dict[str, str] = {}
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line)
        if match is None:
            raise ModelInstallError(
                f"{path}:{number}: expected `<sha256>  <name>.zip`, got {line!r}"
            )
        sums[PurePosixPath(match[2]).name] = match[1].lower()
    return sums


# -- steps of an install ---------------------------------------------------------------------

def _catalogue_entry(language: str) -> CatalogueEntry:
    try:
        return CATALOGUE[language]
    except KeyError:
        raise ModelInstallError(
            f"no published model for language {language!r} (known: {', '.join(CATALOGUE)})"
        ) from None


def _parse_sha256(value: str) -> str:
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ModelInstallError(f"not a SHA-256 (64 hex digits): {value!r}")
    return value


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on folder, so two installs never interleave."""
    # flock on the folder itself leaves no lock file behind; closing the descriptor unlocks.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _remove_leftovers(models_dir: Path) -> None:
    """Remove scratch folders of installs that were killed half-way (we hold the lock)."""
    for entry in models_dir.iterdir():
        if entry.name.startswith(TEMP_PREFIX):
            _remove(entry)


def _already_installed(language: str, target: Path) -> InstalledModel:
    if not looks_like_model(target):
        raise ModelInstallError(
            f"{target} exists but is not a Vosk model; use --force to replace it"
        )
    receipt = _read_receipt(target)
    return InstalledModel(
        language=language,
        path=target,
        name=_str_or_none(receipt.get("name")),
        sha256=_str_or_none(receipt.get("sha256")),
        verified=receipt.get("verified") is True,
        already_installed=True,
    )


def _fetch_and_place(
    entry: CatalogueEntry, url: str, target: Path, scratch: Path, *, pinned: str | None,
    min_bytes: int, max_bytes: int, progress: Progress | None,
) -> str:
    """Download and check the zip in scratch, unpack it, swap it in; return its SHA-256."""
    archive = scratch / entry.archive
    digest, size = _download(url, archive, min_bytes, max_bytes, progress)
    if pinned is not None and digest != pinned:
        raise ModelInstallError(
            f"checksum mismatch for {url}: expected SHA-256 {pinned}, got {digest}"
        )
    model = _unpack(archive, scratch / "unpacked", MAX_UNPACKED_FACTOR * max_bytes)
    archive.unlink()  # free its space before the old model is removed
    receipt = {
        "language": entry.language, "name": entry.name, "url": url, "sha256": digest,
        "verified": pinned is not None, "size": size,
        "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    # Written before the swap, so the receipt appears together with the model.
    (model / RECEIPT).write_text(json.dumps(receipt, indent=2) + "\n", "utf-8")
    _swap_in(model, target, scratch)
    return digest


def _download(
    url: str, into: Path, min_bytes: int, max_bytes: int, progress: Progress | None
) -> tuple[str, int]:
    """Stream url into a file, hashing as it goes; return its SHA-256 and size."""
    digest = hashlib.sha256()
    received = 0
    declared: int | None = None
    try:
        # identity: the byte count and the hash must be of the zip itself, not a re-encoding.
        with requests.get(url, stream=True, timeout=TIMEOUT,
                          headers={"Accept-Encoding": "identity"}) as response:
            if response.status_code != 200:
                raise ModelInstallError(
                    f"download failed: HTTP {response.status_code} {response.reason} from {url}"
                )
            length = response.headers.get("Content-Length", "")
            declared = int(length) if length.isdigit() else None
            if declared is not None and declared > max_bytes:
                raise ModelInstallError(_too_large(url, declared, max_bytes))
            with into.open("wb") as file:
                for chunk in response.iter_content(CHUNK_BYTES):
                    received += len(chunk)
                    if received > max_bytes:
                        raise ModelInstallError(_too_large(url, received, max_bytes))
                    digest.update(chunk)
                    file.write(chunk)
                    if progress is not None:
                        progress(received, declared)
    except requests.RequestException as exc:
        if received:
            message = f"download of {url} broke off after {received} bytes: {exc}"
        else:
            message = f"cannot download {url}: {exc}"
        raise ModelInstallError(message) from exc
    if declared is not None and received != declared:
        raise ModelInstallError(
            f"download of {url} is incomplete: received {received} of {declared} bytes"
        )
    if received < min_bytes:
        raise ModelInstallError(
            f"download of {url} is only {received} bytes, expected at least {min_bytes}"
        )
    return digest.hexdigest(), received


def _too_large(url: str, size: int, max_bytes: int) -> str:
    return f"download of {url} is {size} bytes or more, over the limit of {max_bytes}"


def _unpack(archive: Path, into: Path, max_unpacked: int) -> Path:
    """Check the zip and unpack it into a folder; return the model folder inside."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            top = _single_top_folder(members, archive.name)
            unpacked = sum(member.file_size for member in members)
            if unpacked > max_unpacked:
                raise ModelInstallError(
                    f"{archive.name} would unpack to {unpacked} bytes, over the limit of "
                    f"{max_unpacked}"
                )
            if unpacked > shutil.disk_usage(archive.parent).free:
                raise ModelInstallError(
                    f"not enough disk space to unpack {archive.name} ({unpacked} bytes)"
                )
            # Reading each member to its end checks its CRC-32 (as testzip would), so a bad
            # member fails here without a second pass over the archive.
            for member in members:
                _extract(zipped, member, into)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as exc:
        raise ModelInstallError(f"{archive.name} is not a valid zip: {exc}") from exc
    model = into / top
    if not looks_like_model(model):
        raise ModelInstallError(
            f"{archive.name} holds {top}/, which is not a Vosk model "
            "(it needs am/final.mdl and conf/mfcc.conf or conf/model.conf)"
        )
    return model


def _single_top_folder(members: list[zipfile.ZipInfo], archive: str) -> str:
    """Refuse unsafe member names (zip-slip) and return the zip's one top-level folder."""
    tops = set()
    for member in members:
        name = member.filename
        parts = PurePosixPath(name).parts
        if (not parts or name.startswith(("/", "\\")) or "\\" in name or ".." in parts
                or ":" in parts[0]):
            raise ModelInstallError(f"{archive} has an unsafe member {name!r}; refusing it")
        if len(parts) == 1 and not member.is_dir():
            tops.add(f"file {name}")
        else:
            tops.add(parts[0])
    if len(tops) != 1:
        found = ", ".join(sorted(tops)) or "nothing"
        raise ModelInstallError(f"{archive} should hold one top-level folder, found: {found}")
    return tops.pop()


def _extract(zipped: zipfile.ZipFile, member: zipfile.ZipInfo, into: Path) -> None:
    target = into.joinpath(*PurePosixPath(member.filename).parts)
    if member.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipped.open(member) as source, target.open("wb") as sink:
        shutil.copyfileobj(source, sink, CHUNK_BYTES)


def _swap_in(model: Path, target: Path, scratch: Path) -> None:
    """Put model at target; an old model there moves into scratch, to be removed with it."""
    if not os.path.lexists(target):
        model.rename(target)
        return
    if _exchange(model, target):
        return
    # Without an atomic exchange, target is missing for the instant between two renames,
    # but never half-written; and if the second rename fails, the old model goes back.
    aside = scratch / "replaced"
    target.rename(aside)
    try:
        model.rename(target)
    except OSError:
        aside.rename(target)
        raise


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); return False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    result: int = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                            _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


# -- reading a model folder ------------------------------------------------------------------

def _read_receipt(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / RECEIPT).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
