# Two commands on a fresh machine (both create or reuse .venv/):
#   make demo   set up, generate the synthetic demo data, train the tiny config, stream the test, print OccSTQ
#   make test   set up, run the test suite
.PHONY: setup demo test
PY := .venv/bin/python

setup:
	bash tools/setup_env.sh

demo: setup
	bash tools/demo.sh

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)
