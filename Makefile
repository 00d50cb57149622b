# The two README commands: `make demo` and `make test`. Both create the environment on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install browser clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/somocloud demo

# Headless Chromium (Debian's `chromium`) for the report test; installed when missing.
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

test: $(STAMP) browser
	$(BIN)/ruff check somocloud tests benchmarks
	$(BIN)/ruff format --check somocloud tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) somocloud-demo
