# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo dev test lint unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/deployctl demo

dev: $(STAMP)
	$(BIN)/deployctl dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy workflows activities starter worker.py

# The crash suite (about 5 minutes, mostly waiting on killed workers' queues) runs beside the rest, on
# a dev server of its own; its output follows the rest's. Both must pass.
test: $(STAMP) lint
	@mkdir -p .deployctl
	@$(BIN)/pytest -q -p no:cacheprovider tests/test_crash.py > .deployctl/test-crash.log 2>&1 & crash=$$!; \
	$(BIN)/pytest -q --ignore=tests/test_crash.py; rest=$$?; \
	wait $$crash; crashed=$$?; \
	echo "== tests/test_crash.py (ran beside the rest)"; cat .deployctl/test-crash.log; \
	test $$rest -eq 0 && test $$crashed -eq 0

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .deployctl .pytest_cache .mypy_cache .ruff_cache
