# Every target does its own set-up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format demo-corpus demo-model demo-eval bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so pip takes the local CPU wheel rather than a CUDA build.
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/medplib db upgrade
	$(VENV)/bin/medplib serve

test: install lint
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

# The shipped demo checkpoint, medplib/assets/tiny-demo/ (fp16, ≈15 MB): builds the demo corpus,
# then trains align → vl (then vl-readout, vl-mix: two short runs continuing it) → grounding →
# moe (then moe-continue, a second run at half the learning rate) on the CPU (configs/tiny/):
# 78 min measured on 2 cores of a newer AMD EPYC, 92 on the Intel Xeon that made the shipped one,
# 105-110 on the slower AMD EPYC kind (medplib/train/README.md). moe-continue starts from moe's
# fp16 export, as the shipped one did.
# Interrupted? Run it again: finished stages are skipped and the running one resumes.
# On a CPU shared with other jobs, OMP_NUM_THREADS=1 is often faster than two waiting threads.
DEMO_CORPUS ?= var/demo-corpus
DEMO_RUNS ?= var/demo-train
# DEMO_EXPORT=another/folder retrains without replacing the shipped checkpoint.
DEMO_EXPORT ?= medplib/assets/tiny-demo
# The demo corpus (synthetic + every real source, about 1 min); a half-built one is rebuilt.
demo-corpus: install
	test -f $(DEMO_CORPUS)/data_card.json || { rm -rf $(DEMO_CORPUS) && $(VENV)/bin/medplib data build --out $(DEMO_CORPUS) --workers 2; }

demo-model: demo-corpus
	$(VENV)/bin/medplib train --stage align --config configs/tiny/align.yaml --data $(DEMO_CORPUS) --out $(DEMO_RUNS)/align --resume
	$(VENV)/bin/medplib train --stage vl --config configs/tiny/vl.yaml --data $(DEMO_CORPUS) --out $(DEMO_RUNS)/vl --init $(DEMO_RUNS)/align --resume
	$(VENV)/bin/medplib train --stage vl --config configs/tiny/vl-readout.yaml --data $(DEMO_CORPUS) --out $(DEMO_RUNS)/vl-readout --init $(DEMO_RUNS)/vl --resume
	$(VENV)/bin/medplib train --stage vl --config configs/tiny/vl-mix.yaml --data $(DEMO_CORPUS) --out $(DEMO_RUNS)/vl-mix --init $(DEMO_RUNS)/vl-readout --resume
	$(VENV)/bin/medplib train --stage grounding --config configs/tiny/grounding.yaml --data $(DEMO_CORPUS) --out $(DEMO_RUNS)/grounding --init $(DEMO_RUNS)/vl-mix --resume
	$(VENV)/bin/medplib train --stage moe --config configs/tiny/moe.yaml --data $(DEMO_CORPUS) --out $(DEMO_RUNS)/moe --experts $(DEMO_RUNS)/vl-mix $(DEMO_RUNS)/grounding --resume --export $(DEMO_RUNS)/moe-export
	$(VENV)/bin/medplib train --stage moe --config configs/tiny/moe-continue.yaml --data $(DEMO_CORPUS) --out $(DEMO_RUNS)/moe-continue --init $(DEMO_RUNS)/moe-export --resume --export $(DEMO_EXPORT)
	du -sh $(DEMO_EXPORT)

# The shipped checkpoint on every val and holdout record (about 4 min each on 2 cores) and on
# zero-shot at most 100 evenly spaced records per source and file (white-blood-cell microscopy
# alone would be most of it): the model card's numbers. The two runs can go in parallel.
# Then the best, median and worst real holdout answer per source, outlined on the images.
demo-eval: demo-corpus
	$(PY) -m medplib.eval.corpus --corpus $(DEMO_CORPUS) --out var/demo-eval/val-holdout --splits val holdout
	$(PY) -m medplib.eval.corpus --corpus $(DEMO_CORPUS) --out var/demo-eval/zeroshot --splits zeroshot --per-source 100
	$(PY) benchmarks/contour_grid.py --eval var/demo-eval/val-holdout --corpus $(DEMO_CORPUS) --split holdout --out var/demo-eval/holdout-contours.png
