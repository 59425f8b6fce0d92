# The two set-up commands (see README.md):  make demo   and   make test
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): scripts/setup.sh pyproject.toml
	bash scripts/setup.sh

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) scripts/benchmark.py

clean:
	rm -rf demo_out
