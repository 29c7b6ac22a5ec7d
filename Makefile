# The two commands of the README: `make demo` and `make test`. Each sets everything up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint install checkpoints clean

# Creates .venv when missing and (re)installs the pinned dependencies when a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) app.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The browser tests drive Debian's Chromium (never a downloaded browser): installed here when missing.
# Where apt-get is unavailable or fails, `make test` stops under CI=true (browser tests may not skip there);
# elsewhere the browser tests skip, each saying what is missing.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| { case "$$CI" in 1|true|TRUE|True|yes|on) \
			echo "chromium could not be installed with apt-get, and CI=true: install Debian's chromium (apt-get install chromium)"; exit 1;; \
		*) echo "chromium could not be installed with apt-get: the browser tests will be skipped";; esac; }
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(VENV)/bin/pytest -q

# Trains every registered model with its demo preset (hours on a CPU) and installs each best checkpoint
# into checkpoints/<model>/ with checkpoints/manifest.json (the synthetic gallery's models), then the same on
# the real-photo catalogue into checkpoints/products/; an interrupted run continues where it stopped. Then each
# checkpoint's gallery index and projections are shipped beside it (scripts/ship_indexes.py).
checkpoints: $(STAMP)
	$(PY) scripts/demo_checkpoints.py --resume --jobs 2
	$(PY) scripts/ship_indexes.py
	$(PY) scripts/demo_checkpoints.py --products --resume --jobs 2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-output
