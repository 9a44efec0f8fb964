# Everything a new machine needs, offline, from this repository's own files.
PYTHON ?= python3
NATIVE_PYTHON ?= /usr/bin/python3
VENV ?= .venv
NATIVE_VENV ?= .venv-native
BIN = $(VENV)/bin
DB ?= photos.db
PORT ?= 8001

.PHONY: install demo test test-native docs screenshot benchmarks clean chromium

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

# The main job on the bundled example photos, then browse the result.
demo: install
	$(BIN)/semsearch-sqlite ingest examples/images $(DB) --backbone efficientnet-lite0
	$(BIN)/datasette $(DB) --port $(PORT)

# The whole suite on this Python (no enable_load_extension on pyenv builds: the
# ctypes path, Datasette 0.65), then the TF-free parts and the plugin again on a
# Python that has enable_load_extension, with pysqlite3 and Datasette 1.0a.
test: chromium install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(MAKE) test-native

# tests/test_browser.py renders the pages in this Chromium; without it they would skip.
CHROMIUM = /usr/bin/chromium
chromium:
	@[ -x $(CHROMIUM) ] || { echo "make test: $(CHROMIUM) not found; the browser tests need it: sudo apt-get install chromium"; exit 1; }

test-native:
	@if [ -x $(NATIVE_PYTHON) ]; then \
	  set -e; \
	  [ -x $(NATIVE_VENV)/bin/python ] || $(NATIVE_PYTHON) -m venv $(NATIVE_VENV); \
	  $(NATIVE_VENV)/bin/python -m pip install -q --upgrade pip; \
	  $(NATIVE_VENV)/bin/python -m pip install -q -e '.[test]' 'datasette==1.0a41' pysqlite3-binary; \
	  $(NATIVE_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not slow" \
	    tests/test_sqlite_ext.py tests/test_connection_handle.py tests/test_store.py tests/test_words.py tests/test_tablefunc.py tests/test_plugin.py \
	    tests/test_plugin_config.py tests/test_anchoring.py tests/test_class_tags.py \
	    tests/test_plugin_hooks.py tests/test_plugin_permissions.py tests/test_plugin_web_errors.py \
	    tests/test_results_display.py tests/test_one_behaviour.py tests/test_search_kinds.py; \
	else echo "test-native: $(NATIVE_PYTHON) not found, skipped"; fi

# Regenerate the figures, CLI reference and tables in README.md and docs/ (cog blocks;
# tests/test_docs.py fails when they are stale).
docs: install
	$(BIN)/cog -r -I docs README.md docs/*.md

# docs/search.png: the search page for "bird" over examples/images, in headless Chromium.
screenshot: install
	$(BIN)/python docs/screenshot.py

BENCH_DB ?= benchmarks/dev.db

benchmarks: install
	$(BIN)/python benchmarks/query.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/semantic.py
	[ -f $(BENCH_DB) ] || $(BIN)/semsearch-sqlite ingest ../shared/data/caltech101-dev $(BENCH_DB) --backbone efficientnet-lite0 -q
	$(BIN)/python benchmarks/sqlfuncs.py --db $(BENCH_DB)
	$(BIN)/python benchmarks/duplicates.py --reuse $(BENCH_DB)
	$(BIN)/python benchmarks/feedback.py $(BENCH_DB)
	$(BIN)/python benchmarks/pages.py $(BENCH_DB)

clean:
	rm -rf $(VENV) $(NATIVE_VENV) *.egg-info
