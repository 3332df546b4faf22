# avsf_jax: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Eight fake CPU devices so that sharded code paths run on any machine, and most XLA
# optimizations off (tests are dominated by compiles of small programs; tests that read
# optimized HLO turn them back on in their own subprocess).
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=8 TF_CPP_MIN_LOG_LEVEL=2 JAX_PLATFORMS=cpu \
  JAX_DISABLE_MOST_OPTIMIZATIONS=1
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=15

DEMO_DIR := demo_run

.PHONY: venv test test-fast lint format demo clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps pytorchvideo==0.1.5
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check avsf_jax configs tests
	$(BIN)/ruff format --check avsf_jax configs tests

format: venv
	$(BIN)/ruff check --fix avsf_jax configs tests
	$(BIN)/ruff format avsf_jax configs tests

test: venv lint
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS) tests

# The development tier: everything not marked `slow` (CI runs `make test`, i.e. everything).
test-fast: venv
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS) -m 'not slow' tests

# The embedded demo: builds synthetic_av on first use (into ~/.cache/avsf_jax/datasets, or
# $$AVSF_DATA_DIR), trains a small AVSlowFast on CPU, evaluates it with every view, exports
# it, and evaluates the export (which must reproduce the numbers).
demo: venv
	$(BIN)/python -m avsf_jax.main --config=configs/demo.py --workdir=$(DEMO_DIR)/avslowfast
	$(BIN)/python -m avsf_jax.export --workdir=$(DEMO_DIR)/avslowfast \
	  --output=$(DEMO_DIR)/avslowfast_export --overwrite
	$(BIN)/python -m avsf_jax.evaluate --config=configs/demo.py \
	  --export=$(DEMO_DIR)/avslowfast_export --output=$(DEMO_DIR)/avslowfast_export_eval.json

clean:
	rm -rf $(VENV) demo_run .pytest_cache

# The self-supervised check (docs/self_supervised.md, spec 5): builds synthetic_av_sync in
# memory on first use, pretrains ROT + AVS, AVS only and ROT only, probes every backbone and a
# random-init one, fine-tunes from the ROT + AVS export; writes $(DEMO_DIR)/ssl/table_a1.json
# (Table A.1-shaped, with the acceptance checks) and table_a1.png.
.PHONY: demo-ssl
demo-ssl: venv
	JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m avsf_jax.tools.demo_ssl \
	  --output=$(DEMO_DIR)/ssl

# AVA detection demo (spec ava.md 7.2/7.3): builds synthetic_ava on first use, trains and
# evaluates SlowFast and AVSlowFast detectors on CPU (oracle boxes, detector boxes at 0.8 and
# 0), exports both and checks the exports reproduce the scores; writes
# $(DEMO_DIR)/ava/ava_demo_results.json with the acceptance checks.
.PHONY: demo-ava
demo-ava: venv
	JAX_COMPILATION_CACHE_DIR=$(DEMO_DIR)/.jax_cache \
	  $(BIN)/python -m avsf_jax.tools.ava_demo --output=$(DEMO_DIR)/ava

# Fault injection (tests/faults) and storage: gs:// against a local GCS emulator, shared
# dataset caches (tests/storage).
test-faults: venv
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS) tests/faults tests/storage

# Listen to Look end to end on synthetic_untrimmed (spec §8.2): teacher -> distillation ->
# fine-tune -> feature banks -> skimming -> every baseline; writes ltl_results.json and the
# Fig. 7-style plot under $(DEMO_DIR)/ltl.
.PHONY: demo-ltl
demo-ltl: venv
	JAX_PLATFORMS=cpu $(BIN)/python -m avsf_jax.tools.ltl_demo --out=$(DEMO_DIR)/ltl

# The prepared one-GPU benchmark (docs/benchmarks.md): no TensorFlow needed, only jax, flax,
# optax, orbax, ml_collections and torch (+ pytorchvideo for the side-by-side); one JSON in
# under 8 minutes. Runs with the machine's own python3, not the venv.
.PHONY: bench-gpu
bench-gpu:
	PYTHONPATH=. $(PYTHON) -m avsf_jax.benchmarks.gpu --output=bench_gpu.json

# See that audio matters: the visual-only SlowFast next to AVSlowFast on synthetic_av (the
# AVSlowFast run of `make demo` is reused: in a finished workdir only the evaluation reruns).
# Writes a side-by-side per-class chart and prints both models' per-class rows.
.PHONY: demo-compare
demo-compare: venv
	$(BIN)/python -m avsf_jax.main --config=configs/demo.py --workdir=$(DEMO_DIR)/avslowfast
	$(BIN)/python -m avsf_jax.main --config=configs/demo.py:slowfast --workdir=$(DEMO_DIR)/slowfast
	$(BIN)/python -m avsf_jax.tools.compare_results --a=$(DEMO_DIR)/slowfast/eval_results.json \
	  --b=$(DEMO_DIR)/avslowfast/eval_results.json --output=$(DEMO_DIR)/compare_per_class.png \
	  --label_a=SlowFast --label_b=AVSlowFast

# Beam preparation's test (tests/input/test_beam_prepare.py) in a venv of its own, until the
# main pin set admits apache-beam (it needs protobuf 6, pillow 12, python-dateutil 2 and
# pyarrow 25; docs/data.md).
BEAM_VENV := .venv-beam
.PHONY: test-beam
test-beam:
	test -x $(BEAM_VENV)/bin/python || $(PYTHON) -m venv $(BEAM_VENV)
	grep -v -E '^(protobuf|pillow|python-dateutil|pyarrow)==' constraints.txt > $(BEAM_VENV)/constraints.txt
	$(BEAM_VENV)/bin/python -m pip install -q -c $(BEAM_VENV)/constraints.txt -e . pytest filelock \
	  apache-beam==2.77.0 protobuf==6.33.6 pillow==12.3.0 python-dateutil==2.9.0.post0 pyarrow==25.0.1
	$(TEST_ENV) $(BEAM_VENV)/bin/python -m pytest -q tests/input/test_beam_prepare.py
