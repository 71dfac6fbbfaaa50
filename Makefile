# Set-up and the two everyday jobs. `make demo` and `make test` each do all set-up first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp

.PHONY: setup demo test data java clean-venv

setup: $(STAMP) data java

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# Debian's dataset-fashion-mnist (IDX files in /usr/share/datasets/fashion-mnist) where
# apt-get is usable; elsewhere the demo takes --data-root or downloads through torchvision.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || \
	  echo "note: could not install dataset-fashion-mnist; the demo will look in --data-root or download"; \
	else echo "note: no apt-get as root; the demo will look in --data-root or download Fashion-MNIST"; fi

# Java for COCO's PTB caption tokenizer (pycocoevalcap runs Stanford CoreNLP) where apt-get is
# usable; elsewhere caption scores use the pure-Python PTB fallback and name it in the results.
java:
	@if command -v java >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q default-jre-headless >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q default-jre-headless >/dev/null 2>&1) || \
	  echo "note: could not install default-jre-headless; caption scores will use the pure-Python PTB fallback"; \
	else echo "note: no java and no apt-get as root; caption scores will use the pure-Python PTB fallback"; fi

demo: setup
	$(VENV)/bin/avalanche-cts demo $(ARGS)

# The suite runs in $(TEST_JOBS) processes (pytest-xdist), each test file in one of them.
TEST_JOBS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile $(ARGS)

clean-venv:
	rm -rf $(VENV)
