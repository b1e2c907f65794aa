# secconf: the two commands of the README are `make demo` and `make test`.
# Everything else here is what they are made of.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Kamailio's app_python3 embeds Debian's interpreter, so the venv must use it too.
SYSTEM_PYTHON := /usr/bin/python3
PYTEST_ARGS ?=

.PHONY: setup system-packages demo test test-fast lint typecheck unit clean

setup: system-packages $(STAMP)

system-packages:
	@bash docker/bootstrap-debian.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

demo: setup
	$(VENV)/bin/secconf demo

lint: setup
	$(VENV)/bin/ruff check plugin tests bench
	$(VENV)/bin/ruff format --check plugin tests bench

typecheck: setup
	$(VENV)/bin/mypy

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
define run_pytest
	@$(PY) -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc
endef

test: lint typecheck
	$(call run_pytest,)

test-fast: setup
	$(call run_pytest,-m "not slow")

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
