# Everything a newcomer or CI needs; each target installs what it uses into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WAMDATA := $(VENV)/bin/wamdata
# torch==2.13.0 resolves to a CPU build already on this machine's disk; a bare `torch` pulls CUDA (GBs).
TORCH ?= torch==2.13.0

.PHONY: install demo test test-slow test-lerobot test-browser bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' '$(TORCH)'
	touch $@

install: $(VENV)/.installed

# A small DROID-layout sample (4 good episodes + 2 broken ones, as real trees have), converted with
# a local Ray on 2 workers; the broken ones are recorded in failures.jsonl and allowed by --max-failures.
demo: install
	rm -rf demo
	$(PY) -m tests.fixtures.droid --out demo/droid_raw --episodes 4
	$(WAMDATA) convert --source droid --input demo/droid_raw --output demo/droid_wam \
		--workers 2 --resolution 320x180 --max-failures 2
	$(WAMDATA) validate demo/droid_wam
	$(WAMDATA) info demo/droid_wam

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

# Interop with the real lerobot 0.4.x in its own venv (.venv-lerobot; needs the system FFmpeg, which
# the script installs with apt-get when run as root).
test-lerobot: install
	bash scripts/setup_lerobot_venv.sh
	HF_HUB_OFFLINE=1 .venv-lerobot/bin/python -m pytest -q -m lerobot tests/test_export_lerobot_interop.py

# The HTML stats report rendered in headless Chromium (Debian's package; installed when run as root).
test-browser: install
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(PY) -m pytest -q -m browser

lint: install
	$(VENV)/bin/lint-imports

bench: install
	$(PY) benchmarks/convert_bench.py

clean:
	rm -rf demo $(VENV) .pytest_cache
