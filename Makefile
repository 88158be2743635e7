# mailfleet: the two commands are `make test` and `make demo`; the rest are lab handles.
VENV    := .venv
PY      := $(VENV)/bin/python
LABCTL  := $(PY) lab/labctl.py
PYTEST  := $(PY) -m pytest

.PHONY: deps lint test test-quick demo lab lab-down lab-status lab-image bench clean

deps: $(VENV)/.installed
	@./scripts/install-deps.sh

$(VENV)/.installed: requirements.lock
	@./scripts/install-deps.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	@touch $@

## The one lint configuration (ruff.toml): pyflakes' checks, Salt's dunders known.
lint: deps
	$(VENV)/bin/ruff check .

## Everything: lint, then unit, functional, integration and lab tests (benchmarks excluded).
test: deps lint
	$(PYTEST) tests

## Without the lab (quick loop).
test-quick: deps lint
	$(PYTEST) tests -m "not lab"

## The lab up, then the fleet answering.
demo: deps
	$(LABCTL) demo

lab: deps
	$(LABCTL) up

lab-down: deps
	$(LABCTL) down

lab-status: deps
	@$(LABCTL) status

lab-image: deps
	$(LABCTL) build-image

bench: deps
	@for script in bench/*.py; do [ -e "$$script" ] || continue; echo "== $$script"; $(PY) "$$script" || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
