# DRNet Explorer. `make run` sets everything up and serves the app; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
PORT ?= 8501
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: run test setup data browser evaluate train clean

run: setup data
	$(PY) -m streamlit run app/streamlit_app.py --server.port=$(PORT) --server.headless=true

test: setup data browser
	$(PY) -m pytest -q tests

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# Fashion-MNIST from Debian's package when missing. Without root the app still runs on the
# 2,000-image test subset shipped in assets/; training needs the full dataset.
data:
	@if [ -f $(FASHION_DIR)/t10k-images-idx3-ubyte.gz ] || [ -n "$$DRNET_DATA" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
		|| echo "note: could not install dataset-fashion-mnist; using the shipped test subset"; \
	else \
		echo "note: Fashion-MNIST is not installed; run 'sudo apt-get install dataset-fashion-mnist' or set DRNET_DATA."; \
		echo "      Until then the app and evaluation use the 2,000-image test subset in assets/."; \
	fi

# Debian's Chromium and its driver for the real-browser tests (a browser download cannot work here).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
		echo "error: the browser tests need 'apt-get install chromium chromium-driver' (as root)"; exit 1; \
	fi

evaluate: setup data
	$(PY) -m drnet_core evaluate

train: setup data
	$(PY) -m drnet_core train --preset fashion-wide --output assets/drnet_fashion.pt

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
