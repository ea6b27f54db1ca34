# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT := out/demo

.PHONY: demo test install report-quick order-check mutation mutation-sample clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned to the CPU build: installed first, alone,
# so that nothing resolves a CUDA build of it.
$(STAMP): pyproject.toml $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

# Runs again and again: --force replaces what the last run wrote (psdeploy refuses an existing output without it).
demo: $(STAMP)
	$(BIN)/psdeploy inspect models/ps_resnet_digits.pth
	$(BIN)/psdeploy digits-images -o $(OUT)/digits --force
	$(BIN)/psdeploy export models/ps_resnet_digits.pth -o $(OUT)/ps_resnet_digits.onnx --dynamic-batch --force
	$(BIN)/psdeploy accuracy $(OUT)/ps_resnet_digits.onnx --against models/ps_resnet_digits.pth --data $(OUT)/digits/held-out
	$(BIN)/psdeploy compile --recipe recipes/demo/openvino-cpu.yaml --force
	$(BIN)/psdeploy accuracy $(OUT)/digits-ov --against models/ps_resnet_digits.pth --data $(OUT)/digits/held-out
	$(BIN)/psdeploy compile --recipe recipes/demo/openvino-cpu-int8.yaml --force
	$(BIN)/psdeploy accuracy $(OUT)/digits-ov-int8 --against models/ps_resnet_digits.pth --data $(OUT)/digits/held-out
	$(BIN)/psdeploy export seeded:ps_resnet50 -o $(OUT)/ps_resnet50_seeded.onnx --force
	$(BIN)/psdeploy export seeded:resnet50 -o $(OUT)/resnet50_seeded.onnx --force

# one worker per core of a 2-core CI machine; each test file stays on one worker (its fixtures built once)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# Mutation testing of rewrite/, load/, parity/ and export/counts.py (settings in pyproject.toml), outside CI.
# The whole set (~2,450 mutants) takes hours on 2 cores; the seeded sample of 200 about half an hour.
mutation: $(STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

mutation-sample: $(STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	rm -rf mutants
	-OMP_NUM_THREADS=1 $(BIN)/mutmut run psdeploy.none  # generates the mutants and the test map, runs none
	$(BIN)/mutmut results --all true | sed 's/^ *//' | cut -d: -f1 | $(BIN)/python -c \
	  "import random, sys; n = [l.strip() for l in sys.stdin if l.strip()]; random.Random(0).shuffle(n); print(*sorted(n[:200]))" \
	  > mutants/sample.txt
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children 2 $$(cat mutants/sample.txt)
	$(BIN)/mutmut results

# Do ratios depend on argument order? bench A B and B A twice each, per runtime, on the ResNet-50 pairs
# (minutes; a benchmark, not a test). PS-ResNet-50 in each runtime's default form; TVM from the committed database.
ORDER_CHECK := out/order-check
order-check: $(STAMP)
	mkdir -p $(ORDER_CHECK)
	test -e $(ORDER_CHECK)/r50.onnx || $(BIN)/psdeploy export seeded:resnet50 -o $(ORDER_CHECK)/r50.onnx
	test -e $(ORDER_CHECK)/ps50.onnx || $(BIN)/psdeploy export seeded:ps_resnet50 -o $(ORDER_CHECK)/ps50.onnx
	test -e $(ORDER_CHECK)/r50-ov || $(BIN)/psdeploy compile seeded:resnet50 --target openvino-cpu -o $(ORDER_CHECK)/r50-ov
	test -e $(ORDER_CHECK)/ps50-ov || $(BIN)/psdeploy compile seeded:ps_resnet50 --target openvino-cpu -o $(ORDER_CHECK)/ps50-ov
	test -e $(ORDER_CHECK)/r50-tvm || $(BIN)/psdeploy compile seeded:resnet50 --target llvm --tuning-db reports/tuning-db -o $(ORDER_CHECK)/r50-tvm
	test -e $(ORDER_CHECK)/ps50-tvm || $(BIN)/psdeploy compile seeded:ps_resnet50 --target llvm --tuning-db reports/tuning-db -o $(ORDER_CHECK)/ps50-tvm
	$(BIN)/python -m psdeploy.bench.order_check --threads 2 --pair $(ORDER_CHECK)/r50.onnx $(ORDER_CHECK)/ps50.onnx \
	  --pair $(ORDER_CHECK)/r50-ov $(ORDER_CHECK)/ps50-ov --pair $(ORDER_CHECK)/r50-tvm $(ORDER_CHECK)/ps50-tvm

report-quick: $(STAMP)
	$(BIN)/psdeploy report --quick -o reports/ci --force

clean:
	rm -rf $(OUT) .pytest_cache mutants
