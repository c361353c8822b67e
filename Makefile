# prodmatch: `make demo` and `make test` work on a fresh clone; both are idempotent.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO_DATA := data/demo
DEMO_RUN := runs/demo

.PHONY: demo test test-avx2 lint bench clean

# The venv's own pip (23.2 with Python 3.11) installs everything here; upgrading it first cost 4-5 s of the demo.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's metadata changes. pip byte-compiles one file at a time (about 60 of a fresh
# install's 100 s, torch's thousands of modules); compileall does it on every core instead. Like pip, it skips
# the few files written for other Python versions (torch's py312 test helpers), hence `|| true`.
COMPILE := $(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --no-compile -e .
	$(COMPILE)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q --no-compile -e '.[dev]'
	$(COMPILE)
	touch $@

demo: $(VENV)/.installed
	$(BIN)/prodmatch synth $(DEMO_DATA) --seed 0
	$(BIN)/prodmatch train $(DEMO_DATA) --out $(DEMO_RUN) --overwrite
	@echo
	@echo "Model, metrics and plots: $(DEMO_RUN)/  (config.json, metrics.json, plots/)"
	@echo "Every model on the same split: $(BIN)/prodmatch compare $(DEMO_DATA) --out runs/compare"

# The layer contract (pyproject.toml, [tool.importlinter]) first: a second, then the suite.
test: $(VENV)/.installed-dev
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# The suite with every library's kernels held to AVX2, as on a machine without AVX-512: torch (ATen and oneDNN),
# MKL, OpenBLAS, numpy's dispatch and faiss's build. Floating-point results differ by kernel, so the suite must
# pass on both kinds of machine.
AVX2_ENV := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 OPENBLAS_CORETYPE=Haswell \
	FAISS_OPT_LEVEL=avx2 NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"

test-avx2: $(VENV)/.installed-dev
	$(AVX2_ENV) $(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/bench_data_prep.py
	$(BIN)/python bench/bench_training.py
	$(BIN)/python bench/bench_scoring.py
	$(BIN)/python bench/bench_precision.py
	$(BIN)/python bench/bench_matching.py
	$(BIN)/python bench/bench_serving.py
	$(BIN)/python bench/bench_em.py
	$(BIN)/python bench/bench_cascade.py
	$(BIN)/python bench/bench_spark.py
	$(BIN)/python bench/bench_explain.py
	$(BIN)/python bench/bench_scenarios.py

clean:
	rm -rf $(VENV) data runs bench/out
