# DRNet Explorer. `make run` sets everything up and serves the app; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
PORT ?= 8501
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: run test test-fast setup data browser proxy replicas evaluate train train-supernet clean

run: setup data
	$(PY) -m streamlit run app/streamlit_app.py --server.port=$(PORT) --server.headless=true

# N Streamlit replicas behind nginx on $(PORT), each browser kept on one (docs/DEPLOY.md).
N ?= 2
ADDRESS ?= 127.0.0.1
replicas: setup data proxy
	$(PY) -m deploy.replicas --replicas $(N) --port $(PORT) --address $(ADDRESS)

# `lint-imports` checks the import rules in pyproject.toml (docs/ARCHITECTURE.md) before any test runs.
# Two workers, each test file on one of them (its served app and browser shared by its tests): the
# browser tests spend much of their time waiting on pages, which the other worker fills.
test: setup data browser proxy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# Everything but the tests marked slow (real servers, browsers, several processes): the loop while developing.
test-fast: setup data
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -m "not slow" tests

setup: $(STAMP)

# The pinned set, then this checkout itself as an editable install: drnet_core and the app (drnet_app)
# import from anywhere, and the `drnet` command exists.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --editable .
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

# Debian's nginx for `make replicas` and the two-replica test.
proxy:
	@if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; \
	else \
		echo "error: replicas need 'apt-get install nginx-light' (as root)"; exit 1; \
	fi

evaluate: setup data
	$(PY) -m drnet_core evaluate

# The shipped model's whole lineage (docs/MODEL.md), into runs/ so the shipped assets stay as they are;
# each step resumes when rerun (a finished one is only evaluated again). Two to three hours on 2 CPU cores;
# the last step, which retrains only the routers, takes minutes.
train: setup data
	$(PY) -m drnet_core train --preset fashion-wide --output runs/wide/drnet_fashion_wide.pt
	$(PY) -m drnet_core train --preset fashion-wide --init-from runs/wide/drnet_fashion_wide.pt --epochs 10 \
		--lr 0.01 --tau-start 1.0 --tau-end 0.5 --threshold-warmup-epochs 0 --cost-weight 0.02 \
		--balance-weight 0.02 --output runs/wideft/wide_ft.pt
	$(PY) -m drnet_core train --preset fashion-wide --branches sep_conv_3x3,sep_conv_5x5,dil_conv_3x3,identity \
		--init-from runs/wideft/wide_ft.pt --epochs 10 --lr 0.01 --tau-start 1.0 --tau-end 0.5 \
		--threshold-warmup-epochs 0 --train-threshold 0.2 --cost-weight 0.02 --balance-weight 0.02 \
		--output runs/nopool/drnet_nopool.pt
	$(PY) -m drnet_core train --preset fashion-wide --branches sep_conv_3x3,sep_conv_5x5,dil_conv_3x3,identity \
		--init-from runs/nopool/drnet_nopool.pt --phase routers --epochs 3 --lr 0.05 --tau-start 1.5 \
		--tau-end 0.5 --train-threshold 0.2 --threshold-warmup-epochs 0 --target-mflops 5.5 --budget-weight 1 \
		--gate-weight 4 --balance-weight 0.5 --output runs/routers/drnet_routers.pt

# The supernet recipe and routers retrained on it (docs/MODEL.md, "The supernet recipe"): measured, not
# shipped. About six hours on 2 CPU cores; each step resumes when rerun.
SUPERNET_BRANCHES := sep_conv_3x3,sep_conv_5x5,dil_conv_3x3,identity
train-supernet: setup data
	$(PY) -m drnet_core train --preset fashion-wide --branches $(SUPERNET_BRANCHES) \
		--init-from assets/drnet_fashion_joint.pt --phase supernet --epochs 40 --lr 0.05 --tau-start 1 \
		--tau-end 1 --random-paths 1 --random-path-keep 0.5 --random-erasing 0.5 \
		--output runs/supernet/drnet_supernet.pt
	$(PY) -m drnet_core train --preset fashion-wide --branches $(SUPERNET_BRANCHES) \
		--init-from runs/supernet/drnet_supernet.pt --phase routers --epochs 3 --lr 0.05 --tau-start 1.5 \
		--tau-end 0.5 --train-threshold 0.2 --threshold-warmup-epochs 0 --target-mflops 5.0 --budget-weight 1 \
		--gate-weight 4 --balance-weight 0.5 --random-erasing 0.5 \
		--output runs/supernet_routers/drnet_supernet_routers.pt

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
