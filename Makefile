# Two commands for a newcomer:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# When this make run began (expanded once, before any target runs): tools/demo.py reports the environment
# and model as reused when they are older.
MAKE_STARTED := $(shell date +%s)
# CPU build of PyTorch; GPU users install their own torch before `make setup` (see README).
TORCH_SPEC ?= torch==2.13.0
# fonts-wqy-zenhei: Chinese glyphs in the web-page screenshots taken by headless Chromium.
# junit4: the JUnit tests of AndroidDemo's :core module (make android-core).
SYSTEM_PACKAGES := espeak-ng ffmpeg sox xvfb xdotool chromium libportaudio2 fonts-wqy-zenhei junit4

.PHONY: setup system-deps models demo lint test android-core clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -r requirements.txt
	touch $@

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	else echo "system packages already installed"; fi

setup: $(VENV)/.installed system-deps

models: setup
	$(PY) tools/download_model.py --model=whisper-base
	$(PY) tools/download_model.py --model=whisper-tiny.en

demo: models
	$(PY) tools/demo.py --setup_started_at=$(MAKE_STARTED)

lint: setup
	$(PY) -m ruff check .

# The linter first: a style slip fails in seconds instead of after the suite. AndroidDemo's native build and
# JUnit tests (about 3 minutes on a fresh machine, most of it compiling whisper.cpp) run
# alongside the rest at a lower priority, so they take the CPU the suite leaves idle instead of adding their
# time at the end; their output is printed after the suite's.
# The suite runs in TEST_WORKERS processes (pytest-xdist), one test file per process at a time, so a file's
# server, window or model fixture starts once; much of a test's time is process start-up and waiting on
# subprocesses, which overlaps well even on two cores. --durations lists the slowest tests, to keep the suite
# inside its 15 minutes.
TEST_WORKERS ?= 2
ANDROID_LOG := test-artifacts/android-core-pytest.log
test: models lint
	@mkdir -p test-artifacts
	@nice -n 10 $(PY) -m pytest -q -p no:cacheprovider tests/test_android_core.py > $(ANDROID_LOG) 2>&1 & \
	android=$$!; \
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests --ignore=tests/test_android_core.py; \
	suite=$$?; \
	echo "tests/test_android_core.py (started with the suite):"; wait $$android; android_status=$$?; \
	cat $(ANDROID_LOG); test $$suite = 0 && test $$android_status = 0

# AndroidDemo's native layer (whisper.cpp + our JNI) and its :core module, built and tested on this machine
# (no Android SDK here: AndroidDemo/README.md). `make test` runs the same test among the others.
android-core: models
	$(PY) -m pytest -q tests/test_android_core.py

clean:
	rm -rf $(VENV) output runs
