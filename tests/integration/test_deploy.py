"""The files in deploy/ (README "Installing on a server"): the settings file is a production
configuration the app accepts, the systemd units pass `systemd-analyze verify`, every command
they run works with this checkout, and nginx sends what the app trusts to where it listens."""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from dotenv import dotenv_values

from hotline.app import MAX_REQUEST_BYTES
from hotline.config import Settings
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
UNITS = ("hotline-web.service", "hotline-worker.service")
INSTALLED_AT = "/srv/hotline"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / name)
    return parser


def commands(name: str) -> list[list[str]]:
    """The unit's ExecStartPre and ExecStart command lines, split, without systemd's "-"."""
    lines = (DEPLOY / name).read_text().splitlines()
    found = [line.split("=", 1)[1] for line in lines
             if line.startswith(("ExecStartPre=", "ExecStart="))]
    return [shlex.split(command.lstrip("-")) for command in found]


def test_the_settings_file_is_a_production_configuration_the_app_accepts() -> None:
    values = {k: v or "" for k, v in dotenv_values(DEPLOY / "hotline.env.example").items()}
    settings = Settings.from_env(values)
    settings.check()
    assert not settings.demo
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.proxy_hops == 1 and settings.public_base_url.startswith("https://")
    # Every setting it names is in the README's table, where an operator looks it up.
    readme = (REPO / "README.md").read_text()
    configuration = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for name in values:
        assert f"`{name}`" in configuration, name
    assert set(unit("hotline-web.service")["Service"]["ReadWritePaths"].split()) == {
        values["HOTLINE_DATA_DIR"]}
    assert set(unit("hotline-worker.service")["Service"]["ReadWritePaths"].split()) == {
        values["HOTLINE_DATA_DIR"], values["HOTLINE_BACKUP_DIR"]}


@pytest.mark.parametrize("name", UNITS)
def test_the_systemd_units_verify(name: str, tmp_path: Path) -> None:
    """As installed in this checkout: systemd finds nothing to complain of (an unknown key, a
    command that is not there, a bad path)."""
    settings_file = tmp_path / "hotline.env"
    settings_file.write_text((DEPLOY / "hotline.env.example").read_text())
    copy = tmp_path / name
    copy.write_text((DEPLOY / name).read_text().replace(INSTALLED_AT, str(REPO))
                    .replace("/etc/hotline/hotline.env", str(settings_file)))
    verified = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                              text=True, timeout=60)
    assert (verified.returncode, verified.stderr) == (0, "")
    service = unit(name)["Service"]
    assert service["User"] == "hotline" and service["UMask"] == "0077"


def test_every_command_the_units_run_works(tmp_path: Path) -> None:
    """Each command, with this checkout's virtualenv, on a demo configuration: the migrations
    and the prompts run, gunicorn loads the app with the unit's arguments, the worker's
    options exist."""
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOTLINE_DEMO": "1",
           "HOTLINE_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    ran = []
    for name in UNITS:
        for command in commands(name):
            program = Path(command[0])
            assert program.parent == Path(INSTALLED_AT, ".venv", "bin"), command
            local = [str(BIN / program.name), *command[1:]]
            if program.name == "gunicorn":
                local.insert(1, "--check-config")
            elif command[1] == "worker":
                local.append("--help")  # parses the options, runs nothing
            done = subprocess.run(local, env=env, cwd=tmp_path, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
            ran.append(f"{program.name} {command[1]}")
    assert ran == ["hotline db", "hotline prompts", "gunicorn --bind", "hotline worker"]


def test_nginx_sends_what_the_app_trusts_to_where_it_listens() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    [gunicorn] = [c for c in commands("hotline-web.service") if c[0].endswith("gunicorn")]
    bind = gunicorn[gunicorn.index("--bind") + 1]
    assert f"proxy_pass http://{bind};" in conf
    # The app's own body limit, so nginx refuses what the app would.
    assert f"client_max_body_size {MAX_REQUEST_BYTES // 1024}k;" in conf
    # One proxy (HOTLINE_PROXY_HOPS=1): it sets the headers ProxyFix reads, and empties the
    # ones it does not set (else a client's own would be trusted).
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"):
        assert re.search(rf"proxy_set_header {header} \$", conf), header
    for header in ("X-Forwarded-Port", "X-Forwarded-Prefix"):
        assert f'proxy_set_header {header} "";' in conf, header
    assert "return 301 https://" in conf


def test_the_web_logs_like_the_worker(tmp_path: Path) -> None:
    """gunicorn, started as the unit starts it (in the checkout), reads gunicorn.conf.py: the
    app's records have times, levels and loggers, as the worker's do (hotline.logs)."""
    [gunicorn] = [c for c in commands("hotline-web.service") if c[0].endswith("gunicorn")]
    port = free_port()
    local = [str(BIN / "gunicorn"), *gunicorn[1:]]
    local[local.index("--bind") + 1] = f"127.0.0.1:{port}"
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOTLINE_DEMO": "1",
           "HOTLINE_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    subprocess.run([str(BIN / "hotline"), "db", "upgrade"], env=env, cwd=REPO, check=True,
                   capture_output=True, timeout=120)
    with (tmp_path / "web.log").open("wb") as log:
        web = subprocess.Popen(local, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            pytest.fail((tmp_path / "web.log").read_text(errors="replace"))
    finally:
        web.terminate()
        web.wait(timeout=30)
    output = (tmp_path / "web.log").read_text(errors="replace")
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING hotline\.app: DEMO MODE "
                     r"is on", output, re.MULTILINE), output
    assert "alembic" not in output  # libraries' INFO records stay out
