# The project's commands. `make run` and `make test` are the two that matter; both
# create the virtual environment on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Reinstalled when the dependencies change.
STAMP  := $(VENV)/.installed

.PHONY: venv run test lint checks bench clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# The whole system locally: emulated AWS, resources from template.yaml, a demo user,
# the gateway on loopback ports. Ctrl-C stops it.
run: venv
	$(BIN)/python -m devstack

# Lint, types, then the test suite.
test: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

# cfn-lint, sam validate --lint, the layer's wheels for Lambda (own venv: .venv-tools).
checks:
	bash .ci/template-checks

# Every bench/*.py script (not _private ones); each prints JSON.
bench: venv
	@set -e; for script in bench/*.py; do \
		[ -e "$$script" ] || continue; \
		case "$$(basename "$$script")" in _*) continue;; esac; \
		echo "# $$script" >&2; \
		$(BIN)/python "$$script"; \
	done

clean:
	rm -rf .local .aws-sam .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -path ./.venv-tools -prune -o -name __pycache__ -type d -exec rm -rf {} +

# clean, and the virtual environments too.
distclean: clean
	rm -rf $(VENV) .venv-3.13 .venv-tools
