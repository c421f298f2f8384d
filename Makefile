# `make run` and `make test` each do all set-up from nothing: Debian packages, virtualenv, pip;
# `make run` also migrates its database. Everything lands in .venv/ and instance/ inside the
# checkout.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# espeak-ng renders Kazakh prompts and test speech; sox (with MP3 output for the MP3 tests) and
# ffmpeg convert audio. chromium (with a font that has Cyrillic and Kazakh letters) runs the
# browser tests in tests/browser/, driven by the playwright package from the dev extra.
# postgresql-client: pg_dump and pg_restore for `hotline backup` on PostgreSQL and its tests.
# python3-venv: Debian's python3 makes no virtualenv without it (ensurepip is split out).
# systemd: systemd-analyze, which checks deploy/'s units in tests/integration/test_deploy.py;
# nginx: the same test runs deploy/nginx.conf in front of gunicorn.
# A server needs only SERVER_APT_PACKAGES (`make server-setup`: README "Installing on a server").
SERVER_APT_PACKAGES := espeak-ng sox libsox-fmt-base libsox-fmt-mp3 ffmpeg postgresql-client \
	python3-venv
APT_PACKAGES := $(SERVER_APT_PACKAGES) chromium fonts-dejavu-core systemd nginx
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PORT ?= 5000
export PORT

.PHONY: run test test-slow lint system-deps setup server-setup clean bench

# Installs only the packages that are missing (dpkg knows, whatever is on PATH).
define install_missing
	@missing=""; for package in $(1); do \
		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" \
			|| missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

system-deps:
	$(call install_missing,$(APT_PACKAGES))

# A production server: what the hotline runs with, without the dev extra (test tools, the
# browser driver) or Chromium. Run again after `git pull` (pip then installs what changed).
server-setup:
	$(call install_missing,$(SERVER_APT_PACKAGES))
	[ -x $(BIN)/python ] || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: system-deps $(STAMP)

run: setup
	HOTLINE_DEMO=1 $(BIN)/hotline db upgrade
	HOTLINE_DEMO=1 $(BIN)/hotline flows check
	HOTLINE_DEMO=1 $(BIN)/hotline prompts render
	@echo ""
	@echo "Halyq Uni hotline (demo mode) on http://127.0.0.1:$(PORT)"
	@echo "Call it from a browser:            http://127.0.0.1:$(PORT)/phone (keypad, speaker and microphone)"
	@echo "Try a call from another terminal:  HOTLINE_DEMO=1 $(BIN)/hotline call --url http://127.0.0.1:$(PORT)"
	@echo "Attach a recorded question:        ... hotline call --url http://127.0.0.1:$(PORT) --record question.wav"
	@echo "See the callback queue:            HOTLINE_DEMO=1 $(BIN)/hotline queue"
	@echo "Workspace in a browser:            HOTLINE_DEMO=1 $(BIN)/hotline users add you@example.kz --role coordinator --name You"
	@echo "                                   then open http://127.0.0.1:$(PORT)/login (public figures: /public)"
	@echo "Is the worker keeping up?          HOTLINE_DEMO=1 $(BIN)/hotline health   (or /health/ready)"
	@echo ""
	@# -e /dev/null: honcho would put .env over the environment; the processes read .env
	@# themselves (python-dotenv), where what the environment sets wins (README).
	HOTLINE_DEMO=1 PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start -e /dev/null --port $(PORT) web worker

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# pytest-xdist: the suite in TEST_WORKERS processes (0: in this one). Three on two cores: much of a
# test is waiting (PostgreSQL, Chromium, subprocesses): 8 minutes with 3 where 1 took 19 (7 Dec).
TEST_WORKERS ?= 3

test: lint
	$(BIN)/pytest -m "not slow" -n $(TEST_WORKERS)

test-slow: setup
	$(BIN)/pytest -m slow

# The transcription benchmarks (bench/README.md). `make bench BENCH_ARGS=--quick` for a short run.
# Its baseline, vosk-transcriber, needs ffmpeg: one of APT_PACKAGES.
bench: setup
	$(BIN)/python bench/transcription.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) instance test-artifacts
