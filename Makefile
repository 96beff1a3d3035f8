# `make demo` and `make test` work on a fresh machine: each creates .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-fast tools browser postgres spamassassin bench clean

# the package alone: all `make demo` needs
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# compat mode: a plain path entry instead of an import hook (~9 ms off every start)
	$(BIN)/python -m pip install --quiet -e . --config-settings editable_mode=compat
	touch $(STAMP)

# and what the tests and benchmarks use (pytest, Playwright, psycopg, aiosmtpd, ...)
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $(TEST_STAMP)

## demo: check, render and dry-run send the bundled example issue
demo: $(STAMP)
	$(BIN)/newsletter check issues/2021-03.yaml
	$(BIN)/newsletter render issues/2021-03.yaml
	$(BIN)/newsletter send issues/2021-03.yaml --list example

## tools: npm tools for the tests and benchmarks (MJML CLI, Prism, MailDev) into .tools/
tools:
	bench/setup-tools.sh

## browser: Debian's Chromium for the browser tests (needs root; skipped tests otherwise)
browser:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
	    else echo "Chromium is missing: sudo apt-get install chromium (browser tests are skipped without it)"; fi; }

## postgres: Debian's PostgreSQL server for the state-store tests (needs root; skipped tests otherwise)
postgres:
	@test -x /usr/lib/postgresql/15/bin/initdb || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get install -y postgresql || { apt-get update && apt-get install -y postgresql; }; \
	    else echo "PostgreSQL is missing: sudo apt-get install postgresql (its tests are skipped without it)"; fi; }

## spamassassin: Debian's SpamAssassin for `check --spam` and its tests (needs root; skipped tests otherwise)
spamassassin:
	@command -v spamassassin >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get install -y spamassassin || { apt-get update && apt-get install -y spamassassin; }; \
	    else echo "SpamAssassin is missing: sudo apt-get install spamassassin (its tests are skipped without it)"; fi; }

## test: the whole suite (browser, PostgreSQL, Prism and MailDev tests included)
test: $(TEST_STAMP) tools browser postgres spamassassin
	$(BIN)/python -m pytest

## test-fast: the suite without the external tools
test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -m "not browser and not prism and not maildev and not postgres"

## bench: render and send benchmarks (print figures; see bench/)
bench: $(TEST_STAMP) tools
	$(BIN)/python bench/render_bench.py
	$(BIN)/python bench/send_bench.py

clean:
	rm -rf out outbox .newsletter .pytest_cache
