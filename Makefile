# The two commands a newcomer runs: `make demo` and `make test`. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision builds that lie on this machine's local disk (never let set-up fetch a multi-GB build).
ifeq ($(shell uname -m),aarch64)
TORCH_PINS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
endif
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
DEMO_DIR ?= demo_out
PYTEST_WORKERS ?= 2

.PHONY: demo test test-fast install clean system-packages

$(VENV)/.installed-base: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) $(TORCH_PINS)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-base
	$(PIP) -e '.[test]'
	touch $@

install: $(VENV)/.installed-base

# Chromium, chromium-driver and dicom3tools for the report and DICOM tests (only what is missing).
system-packages:
	bash tools/system_packages.sh

demo: $(VENV)/.installed-base
	$(VENV)/bin/medcad demo --out $(DEMO_DIR)

# The whole suite, slow end-to-end runs included (CI runs this); `pending` marks checks of
# unfinished work that are known to fail.
test: $(VENV)/.installed-test system-packages
	$(PY) -m pytest -m "not pending" -n $(PYTEST_WORKERS) --dist loadgroup

# The quick default suite.
test-fast: $(VENV)/.installed-test system-packages
	$(PY) -m pytest -n $(PYTEST_WORKERS)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build src/*.egg-info
