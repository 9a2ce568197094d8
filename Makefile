# The whole set-up is `make run` and `make test`; both install into ./.venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-runtime run test lint bench bench-smoke lock clean

# Development and CI: the runtime lock's pins plus tests, linters and the benchmark's tools.
install: $(STAMP)

$(STAMP): requirements-dev.lock requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

# Production: only what `cbstop` runs, into a virtualenv of its own:
# `make install-runtime DEST=/opt/cbstop`, then `/opt/cbstop/bin/cbstop serve ...`.
install-runtime:
	@test -n "$(DEST)" || { echo "usage: make install-runtime DEST=/path/to/venv" >&2; exit 2; }
	test -x $(DEST)/bin/python || $(PYTHON) -m venv $(DEST)
	$(DEST)/bin/python -m pip install -q --upgrade pip
	$(DEST)/bin/python -m pip install -q --require-hashes -r requirements.lock
	$(DEST)/bin/python -m pip install -q --no-deps .

# `make run PORT=8080 HOST=0.0.0.0` to listen elsewhere.
PORT ?= 8000
HOST ?= 127.0.0.1

run: install
	$(BIN)/cbstop serve --demo --host $(HOST) --port $(PORT)

test: install
	$(BIN)/pytest -n 2 --dist loadgroup

lint: install
	$(BIN)/ruff check cbstop tests bench
	$(BIN)/ruff format --check cbstop tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.run

bench-smoke: install
	$(BIN)/python -m bench.run --smoke

# Re-pin after editing pyproject.toml (needs uv: `pip install uv`). The runtime lock is
# resolved alone; the development lock is constrained to its pins, so both agree.
lock:
	uv pip compile pyproject.toml --python-version 3.11 --generate-hashes -o requirements.lock
	uv pip compile pyproject.toml --extra dev -c requirements.lock --python-version 3.11 \
		--generate-hashes -o requirements-dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache cbstop.db
