# The two commands: `make demo` (the main job) and `make test`. Both set up .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
# The stamp's name changes whenever an install input changes, so a stale .venv is refreshed.
INSTALL_INPUTS := requirements.txt tools/install_detectron2.sh setup.py
STAMP  := $(VENV)/.installed-$(shell cat $(INSTALL_INPUTS) | sha1sum | cut -c1-12)
DEMO_DIR ?= output/demo
DEMO_CONFIG ?= configs/zs_shapes/projection_mask_rcnn.yaml
export PYTHONWARNINGS ?= ignore

.PHONY: setup demo test clean-venv

setup: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	@echo ">>> Setting up $(VENV) (torch, detectron2 0.6, zsi_d2); takes a few minutes the first time"
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	@echo ">>> [1/3] requirements.txt: torch, torchvision (about 5.5 GB unpacked), timm, open_clip, pycocotools, ..."
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	@$(VPY) -c "import torch, torchvision, timm, open_clip, pycocotools" || { echo "Dependency install failed"; exit 1; }
	@echo ">>> [2/3] detectron2 0.6 from its source release (about 20 s)"
	PYTHON=$(VPY) bash tools/install_detectron2.sh
	@echo ">>> [3/3] zsi_d2 (editable)"
	$(VPY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | { grep -v "^WARNING: Location" || true; }
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo ">>> $(VENV) ready"

demo: setup
	@mkdir -p $(DEMO_DIR)
	@echo ">>> [demo 1/3] zs_shapes (generated on first use, about 10 s) and a preview"
	$(VPY) -m zsi_d2.data.zs_shapes --difficulty default --preview $(DEMO_DIR)/zs_shapes_preview.png
	@echo ">>> [demo 2/3] training the projection baseline on the CPU (loss and ETA every 20 iterations), then evaluating"
	$(VPY) train_net.py --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_DIR)
	@echo ">>> [demo 3/3] drawing predictions"
	$(VPY) tools/visualize_predictions.py --config-file $(DEMO_CONFIG) \
		--weights $(DEMO_DIR)/model_final.pth --dataset zs_shapes_val --num 8 \
		--output $(DEMO_DIR)/predictions.png
	@echo ">>> Demo done. Results: $(DEMO_DIR)/zero_shot_results.json, pictures: $(DEMO_DIR)/*.png"

test: setup
	$(VPY) -m ruff check --select F,E9 --line-length 120 zsi_d2 train_net.py tools tests
	$(VPY) -m pytest tests -q

clean-venv:
	rm -rf $(VENV)
