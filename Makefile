# Two set-up commands for a fresh machine: `make demo` and `make test`. Both create the environment first.
VENV     ?= .venv
PY       := $(VENV)/bin/python
R3FA     := $(VENV)/bin/r3fa
STAMP    := $(VENV)/.installed-stamp
RUN_DIR  ?= runs

# Prefect: project-local home, no telemetry (it tries the network and can lock the SQLite file).
export PREFECT_HOME                      ?= $(abspath $(RUN_DIR))/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED  := false
export DO_NOT_TRACK                      := 1
export PREFECT_UI_ENABLED                ?= false
# glibc's default malloc thresholds make CPU training several times slower here.
export GLIBC_TUNABLES                    ?= glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=4294967296

.PHONY: install demo test server worker deploy services services-stop bench clean

install: $(STAMP)

# torch first, pinned: a bare `torch` requirement would pull the CUDA build and several GB of packages.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, prefect, nvidia.dali, webdataset, cv2, pyarrow, dask.distributed"
	touch $@

demo: $(STAMP)
	$(R3FA) demo --config configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q --timeout=900

server: $(STAMP)
	$(VENV)/bin/prefect server start --host 127.0.0.1 --port 4200

worker: $(STAMP)
	PREFECT_API_URL=http://127.0.0.1:4200/api $(VENV)/bin/prefect worker start --pool r3fa-process --type process --limit 1

# server + worker in the background (pid files and logs under $(PREFECT_HOME)); see docs/team.md
services: $(STAMP)
	$(PY) scripts/prefect_services.py start

services-stop: $(STAMP)
	$(PY) scripts/prefect_services.py stop

deploy: $(STAMP)
	PREFECT_API_URL=http://127.0.0.1:4200/api $(VENV)/bin/prefect --no-prompt deploy --all

bench: $(STAMP)
	bash bench/run_all.sh

clean:
	rm -rf $(RUN_DIR) .cache
