# coopwatt: `make demo` and `make test` do all set-up on a fresh Debian / Raspberry Pi OS machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: demo test lint typecheck check-python mosquitto chromium clean

demo: $(STAMP) mosquitto
	$(BIN)/coopwatt demo $(DEMO_ARGS)

test: $(STAMP) mosquitto chromium lint typecheck
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The household page's words: extract them, merge into agent/web/locale/*/messages.po, compile.
web-messages: $(STAMP)
	$(BIN)/python agent/web/locale/update.py

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "coopwatt needs Python 3.11 or newer; set PYTHON=python3.11")'

$(STAMP): pyproject.toml | check-python
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { echo "python3-venv is missing: sudo apt-get install python3-venv"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[agent,hub,sim,train,dev]'
	touch $(STAMP)

# Mosquitto is the broker; install it with apt when missing and we may (root, or sudo without a
# password). Otherwise the demo falls back to the embedded broker, and the tests say what to do.
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing mosquitto with apt-get"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		echo "installing mosquitto with sudo apt-get"; \
		sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	else \
		echo "note: mosquitto is not installed and I may not install it (sudo apt-get install mosquitto)"; \
	fi

# The page tests drive Debian's headless Chromium through its chromedriver (tests/browser.py);
# nothing is downloaded at test time. Installed like Mosquitto; without them those tests fail
# saying how to install them. No recommends (they bring avahi, cups, a notification daemon):
# fonts-liberation, a recommend, draws the text in screenshots.
CHROMIUM_PACKAGES := chromium chromium-driver fonts-liberation
chromium:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing $(CHROMIUM_PACKAGES) with apt-get"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(CHROMIUM_PACKAGES) >/dev/null; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		echo "installing $(CHROMIUM_PACKAGES) with sudo apt-get"; \
		sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(CHROMIUM_PACKAGES) >/dev/null; \
	else \
		echo "note: chromium is not installed and I may not install it (sudo apt-get install --no-install-recommends $(CHROMIUM_PACKAGES)); the browser tests will fail"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis coopwatt-demo.db* build/screenshots
