# secconf: the two commands of the README are `make demo` and `make test`.
# Everything else here is what they are made of.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Every package the venv holds, runtime and dev, with its hashes (uv pip compile from the ranges
# in pyproject.toml; `make lock` regenerates it). pyproject.toml keeps the ranges for people who
# install the plugin into an environment of their own.
LOCK   := requirements.lock
# The images' subset (runtime and build backend, no dev tools), constrained to the same versions.
RUNTIME_LOCK := docker/requirements-runtime.lock
PIP    := $(PY) -m pip --quiet --disable-pip-version-check
UV_COMPILE = pyproject.toml --generate-hashes --python-version 3.11 --quiet \
	--custom-compile-command "make lock"
# Kamailio's app_python3 embeds Debian's interpreter, so the venv must use it too.
SYSTEM_PYTHON := /usr/bin/python3
PYTEST_ARGS ?=

.PHONY: setup system-packages demo test test-fast lint typecheck structure unit clean lock lock-check

setup: system-packages $(STAMP)

system-packages:
	@bash docker/bootstrap-debian.sh

# Exactly the lock: a new venv whenever the lock or the project changes (nothing left over from
# an older lock), the locked packages by hash, then the project itself without resolving again
# (no dependencies, no build isolation: the build uses the locked setuptools).
$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r $(LOCK)
	$(PIP) install --no-deps --no-build-isolation -e .
	$(PIP) check
	@touch $@

# Resolve the ranges in pyproject.toml anew (the newest releases they allow) into the lock.
# Needs only the locked uv: works even when pyproject.toml has moved away from the lock.
$(VENV)/bin/uv:
	@test -x $(PY) || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r $(LOCK)

lock: $(VENV)/bin/uv
	$(VENV)/bin/uv pip compile $(UV_COMPILE) --extra dev --extra build --upgrade -o $(LOCK)
	$(VENV)/bin/uv pip compile $(UV_COMPILE) --extra build -c $(LOCK) -o $(RUNTIME_LOCK)
	@git diff --stat -- $(LOCK) $(RUNTIME_LOCK) 2>/dev/null || true

# The weekly freshness check: the ranges resolved anew in a throwaway venv, then lint, types,
# structure and the fast tests there. The lock and .venv are not touched.
lock-check: setup
	@bash .ci/lock-check

demo: setup
	$(VENV)/bin/secconf demo

lint: setup
	$(VENV)/bin/ruff check plugin tests bench
	$(VENV)/bin/ruff format --check plugin tests bench

typecheck: setup
	$(VENV)/bin/mypy

# The import contracts of pyproject.toml [tool.importlinter]: ../shared/architecture.json's
# "never" rules that hold, the core alone, the product without the lab (docs/ARCHITECTURE.md).
structure: setup
	$(VENV)/bin/lint-imports --no-cache --no-logo

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
define run_pytest
	@$(PY) -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc
endef

test: lint typecheck structure
	$(call run_pytest,)

test-fast: setup
	$(call run_pytest,-m "not slow")

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
