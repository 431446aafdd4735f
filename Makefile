# Two commands on a fresh machine:  `make run`  and  `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SPEC ?= assistant.yaml

.PHONY: run plan stop test lint bench schema golden clean

# Validate the spec, render it and apply it to this machine; the assistant answers on :8080.
run: $(VENV)/.installed
	scripts/system-packages run
	$(BIN)/assistantctl -f $(SPEC) validate
	$(BIN)/assistantctl -f $(SPEC) apply --auto-approve

plan: $(VENV)/.installed
	$(BIN)/assistantctl -f $(SPEC) plan --diff

stop: $(VENV)/.installed
	$(BIN)/assistantctl -f $(SPEC) stop

# The whole suite, real tools included (install them with `scripts/system-packages test`), on 4
# workers (tests/conftest.py keeps the fleet tests in one), under a short temporary root: supervisord's
# control socket lives under each test's deploy root, and a unix socket's path holds 107 bytes.
test: $(VENV)/.installed
	scripts/system-packages test
	$(BIN)/ruff check .
	$(BIN)/pytest -n 4 --basetemp=$$(mktemp -d /tmp/t.XXXXXX)

lint: $(VENV)/.installed
	$(BIN)/ruff check .

bench: $(VENV)/.installed
	scripts/system-packages bench
	$(BIN)/python bench/render.py
	$(BIN)/python bench/engine_chat.py --duration 10
	$(BIN)/python bench/instructions.py

# Regenerate the committed JSON Schema, its Markdown reference and the OpenAPI document after
# changing their sources.
schema: $(VENV)/.installed
	$(BIN)/assistantctl schema > schema/assistant.schema.json
	$(BIN)/assistantctl schema --markdown > docs/spec.md
	$(BIN)/python -m assistantctl.engine.api.openapi > engine/api/openapi.json

# Regenerate tests/golden after an intended renderer/template change; review the diff.
golden: $(VENV)/.installed
	$(BIN)/python tests/golden/update.py

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
