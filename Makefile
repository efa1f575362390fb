# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint chromium clean

$(INSTALLED): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/hardood demo

# the tests also run the Ray engine, an optional extra
RAY_INSTALLED := $(VENV)/.ray-installed
$(RAY_INSTALLED): $(INSTALLED)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,ray]'
	@touch $(RAY_INSTALLED)

test: $(RAY_INSTALLED) chromium
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

# Browser tests drive Debian's chromium through Playwright; never `playwright install`.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		(sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null); }

clean:
	rm -rf demo_workspace .pytest_cache
