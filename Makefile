# Two entry points for a bare machine (see README): `make run` and `make test`.
# Both create .venv on first use. TORCH selects the torch wheel: the CPU build pinned here is the
# one on the project's machines; on a GPU host use e.g. `make TORCH="torch==2.13.0" run` with
# PyTorch's CUDA index configured in pip.
PYTHON ?= python3
VENV := .venv
TORCH ?= torch==2.13.0
CORES ?= 2
STAMP := $(VENV)/.installed
SNAKEMAKE ?= $(VENV)/bin/snakemake
N2SR_PYTHON ?= $(VENV)/bin/python

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH)"
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/snakemake --profile profiles/default --cores $(CORES)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/speed.py
	$(VENV)/bin/python benchmarks/quality_fmd.py

# Removes only what the workflow generated: the outputs of `make run` (Snakemake's own list), the
# partial reports, training resume states and killed jobs' temporaries under results/, logs and
# Snakemake's state, and in generated folders (the demo archive under resources/) the files listed
# in their record (.n2sr-files). Everything else stays, also a user's files inside those folders.
clean:
	$(SNAKEMAKE) --delete-all-output --quiet
	$(N2SR_PYTHON) -m n2sr.io.generated remove .
	rm -rf results/reports/partial logs .snakemake
	if [ -d results ]; then \
	  find results \( -name '*.pt.state' -o -name '.*.tmp-*' -o -name '.*.old-*' \) -prune -exec rm -rf {} + ; \
	  if [ -d results/benchmarks ]; then find results/benchmarks -name '*.tsv' -type f -delete; fi; \
	  find results -depth -type d -empty -delete; fi
