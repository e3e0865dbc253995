# make repro: set up, then run the whole study with `dvc repro` (PROFILE=gpu: `dvc exp run` with infra/profiles/gpu.yaml).
# make test:  set up, then run the test suite.
# make lint:  ruff check and ruff format --check (CI runs it before the tests).
# make sweep STAGE=colorize|cyclegan|munit|classify: a Ray Tune (ASHA) sweep of that stage's loss weights.
# make predict TASK=... MODEL=... IN=... OUT=...: apply a trained model to your own images (see the target below).
VENV   ?= .venv
PYTHON ?= python3.11
BIN    := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE ?= disabled

.PHONY: setup repro test lint ui bench efficiency sweep predict lock

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

PROFILE ?=
# stages.with_ray: one private local Ray instance (127.0.0.1 only) that every stage joins, stopped at the end
repro: setup
ifeq ($(PROFILE),)
	python -m stages.with_ray -- dvc repro
else
	eval python -m stages.with_ray -- dvc exp run $$(python -m stages.profile $(PROFILE))
endif

test: setup
	python -m pytest -q -n 2 --dist worksteal --durations=15

lint: setup
	ruff check .
	ruff format --check .

ui: setup
	@uri="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}"; \
	case "$$uri" in \
	  http://*|https://*) echo "MLflow runs on a server: open $$uri (no local UI to start)";; \
	  *) exec mlflow ui --backend-store-uri "$$uri" --host "$${MLFLOW_HOST:-127.0.0.1}" --port "$${MLFLOW_PORT:-5000}";; \
	esac

bench: setup
	python benchmarks/step_profile.py

efficiency: setup
	dvc repro studies/data_efficiency/dvc.yaml

STAGE ?= colorize
sweep: setup
	python -m stages.sweep --stage $(STAGE)

# make predict TASK=colorize|stylize|classify MODEL=models/<file>.pt IN=<folder or files> OUT=<folder or .csv> [ARGS="--style DIR --overwrite ..."]
predict: setup
	python -m stages.predict $(TASK) --model $(MODEL) --input $(IN) --output $(OUT) $(ARGS)

# make lock: re-pin infra/docker/requirements.lock (the image's whole environment) from pyproject.toml
lock: setup
	python -m pip install -q pip-tools
	pip-compile -q --allow-unsafe --extra=cluster --extra=test --no-emit-index-url --strip-extras -o infra/docker/requirements.lock pyproject.toml
