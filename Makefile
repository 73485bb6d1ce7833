# Two set-up commands for a fresh machine: `make demo` and `make test`. Both create the environment first.
VENV     ?= .venv
PY       := $(VENV)/bin/python
R3FA     := $(VENV)/bin/r3fa
STAMP    := $(VENV)/.installed-stamp
RUN_DIR  ?= runs
# Prefect's home (database, logs, pid files); the rest of the environment (telemetry off, R3FA_DATA, the malloc
# tunables that make CPU training 2-5x faster) is defined once, in flows/settings.py, and every recipe runs in it.
PREFECT_HOME ?= $(abspath $(RUN_DIR))/prefect
PORT         ?= 4200
IN_ENV   := $(PY) -m flows.settings --home $(PREFECT_HOME) --
SERVICES := $(PY) scripts/prefect_services.py --home $(PREFECT_HOME) --port $(PORT)

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
	$(IN_ENV) $(R3FA) demo --config configs/demo.yaml

test: $(STAMP)
	$(IN_ENV) $(PY) -m pytest -q --timeout=900

# Prefect server with its UI on http://127.0.0.1:$(PORT) / a process worker, each in the foreground (two terminals)
server: $(STAMP)
	$(SERVICES) server

worker: $(STAMP)
	$(SERVICES) worker

# server + worker in the background (pid files and logs under $(PREFECT_HOME)); says so when already running
services: $(STAMP)
	$(SERVICES) start

services-stop: $(STAMP)
	$(SERVICES) stop

# every deployment of prefect.yaml, and the retrain alert (flows/alerts.py) through a webhook,
# `make deploy ALERT_WEBHOOK=https://...`, or a notification block already saved, `ALERT_BLOCK=type/name`
deploy: $(STAMP)
	$(SERVICES) deploy $(if $(ALERT_WEBHOOK),--alert-webhook '$(ALERT_WEBHOOK)') $(if $(ALERT_BLOCK),--alert-block '$(ALERT_BLOCK)')

bench: $(STAMP)
	$(IN_ENV) bash bench/run_all.sh

clean:
	rm -rf $(RUN_DIR) .cache
