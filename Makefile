# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT := out/demo

.PHONY: demo test install report-quick clean

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

demo: $(STAMP)
	mkdir -p $(OUT)
	$(BIN)/psdeploy inspect models/ps_resnet_digits.pth
	$(BIN)/psdeploy export models/ps_resnet_digits.pth -o $(OUT)/ps_resnet_digits.onnx --dynamic-batch
	$(BIN)/psdeploy accuracy $(OUT)/ps_resnet_digits.onnx --against models/ps_resnet_digits.pth
	$(BIN)/psdeploy compile --recipe recipes/demo/openvino-cpu.yaml --force
	$(BIN)/psdeploy accuracy $(OUT)/digits-ov --against models/ps_resnet_digits.pth
	$(BIN)/psdeploy export seeded:ps_resnet50 -o $(OUT)/ps_resnet50_seeded.onnx
	$(BIN)/psdeploy export seeded:resnet50 -o $(OUT)/resnet50_seeded.onnx

test: $(STAMP)
	$(BIN)/python -m pytest -q

report-quick: $(STAMP)
	$(BIN)/psdeploy report --quick -o reports/ci

clean:
	rm -rf $(OUT) .pytest_cache
