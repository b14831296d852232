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
# demo.py's step: 4 images of zs_shapes' default validation set; the config's test set (seen +
# unseen) and names nobody labelled: the split's distractors and a shape zs_shapes does not draw.
DEMO_IMAGES ?= 000001.png 000006.png 000007.png 000009.png
DEMO_NEW_NAMES ?= "purple circle" "purple square" "purple star" "white cross" "orange hexagon"
# Training processes (on a CPU, `--num-gpus N` starts N gloo processes of one thread each): two
# single-threaded processes train 1.27x faster than one process with two threads on 2 cores.
DEMO_PROCS ?= 2
export PYTHONWARNINGS ?= ignore

.PHONY: setup demo test clean-venv

setup: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	@echo ">>> Setting up $(VENV) (torch, detectron2 0.6, zsi_d2); takes a few minutes the first time"
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	@echo ">>> [1/3] requirements.txt: torch, torchvision (about 5.5 GB unpacked), timm, open_clip, pycocotools, ..."
	@# --no-compile: byte-compiling all of torch took a third of this step; modules compile when first imported.
	@# The full pip log goes to $(VENV)/pip-install.log; the terminal gets a progress line every 20 packages.
	@$(VPY) -m pip install --no-compile --disable-pip-version-check -r requirements.txt 2>&1 | tee $(VENV)/pip-install.log \
		| awk '/^Collecting /{n++; if (n % 20 == 0) {print "    " n " packages resolved"; fflush()}} \
		       /^Installing collected packages/{print "    unpacking " n " packages (the longest part: torch is 5.5 GB)"; fflush()} \
		       /^(ERROR|error)/{print; fflush()}' \
		|| { echo "pip install failed: see $(VENV)/pip-install.log"; exit 1; }
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
	@echo ">>> [demo 1/4] zs_shapes (generated on first use, about 10 s) and a preview"
	$(VPY) -m zsi_d2.data.zs_shapes --difficulty default --preview $(DEMO_DIR)/zs_shapes_preview.png
	@echo ">>> [demo 2/4] training the projection baseline on the CPU, $(DEMO_PROCS) processes (loss and ETA every 20 iterations), then evaluating"
	$(VPY) train_net.py --num-gpus $(DEMO_PROCS) --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_DIR)
	@echo ">>> [demo 3/4] drawing predictions"
	$(VPY) tools/visualize_predictions.py --config-file $(DEMO_CONFIG) \
		--weights $(DEMO_DIR)/model_final.pth --dataset zs_shapes_val --num 8 \
		--output $(DEMO_DIR)/predictions.png
	@echo ">>> [demo 4/4] demo.py on 4 validation images: the test set and 5 names never labelled in training"
	@val=$$($(VPY) -c "from zsi_d2.data.zs_shapes.generate import dataset_dir; print(dataset_dir())")/val/images; \
	set -x; $(VPY) demo.py --config-file $(DEMO_CONFIG) --weights $(DEMO_DIR)/model_final.pth \
		--input $(addprefix $$val/,$(DEMO_IMAGES)) --extra-vocabulary $(DEMO_NEW_NAMES) --output $(DEMO_DIR)/open_vocabulary
	@echo ">>> Demo done. Results: $(DEMO_DIR)/zero_shot_results.json, pictures: $(DEMO_DIR)/*.png, $(DEMO_DIR)/open_vocabulary/"

test: setup
	$(VPY) -m ruff check --select F,E9 --line-length 120 zsi_d2 train_net.py demo.py tools tests projects
	$(VPY) -m pytest tests -q

clean-venv:
	rm -rf $(VENV)
