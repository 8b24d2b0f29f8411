# Developer entry points. Everything runs from the repo-root virtualenv .venv.
PY ?= python3
VENV := .venv
PYTEST_ARGS ?=
# apt-get as root, or through sudo when we are not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
APT_INSTALL = $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q

.PHONY: venv run reset-data lint lint-code check test clean messages

venv: $(VENV)/.installed

# Re-installs whenever the pinned requirements change. Debian's python3 ships
# without ensurepip, so a failed `venv` gets python3-venv and a second try.
$(VENV)/.installed: requirements/test.txt requirements/base.txt
	@[ -x $(VENV)/bin/pip ] || $(PY) -m venv $(VENV) || { \
	  rm -rf $(VENV) && $(APT_INSTALL) python3-venv && $(PY) -m venv $(VENV); }
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements/test.txt
	@# tests/test_i18n.py extracts the marked strings with GNU gettext (issue 20)
	@command -v xgettext >/dev/null || $(APT_INSTALL) --no-install-recommends gettext
	touch $@

run: venv
	scripts/run.sh

# Wipes make run's local PostgreSQL data (users, trades, the ledger); stop make run first.
reset-data:
	rm -rf .data

# The code's own checks (seconds): style, the layers contract, types, migrations.
lint-code: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# One direction of dependency between the apps (docs/architecture.md).
	$(VENV)/bin/lint-imports --no-cache
	# Types: strict on ledger/ and escrow/ (pyproject.toml [tool.mypy]). The Django plugin imports
	# the settings, which need these URLs set; it never connects.
	DATABASE_URL=postgres://localhost/x REDIS_URL=redis://localhost/0 $(VENV)/bin/mypy
	SERVICES="postgres redis anvil" scripts/with-services.sh \
	  $(VENV)/bin/python manage.py makemigrations --check --dry-run

# Everything make test checks before the suite: the code's checks, the compose file, the pins.
lint: lint-code
	# docker-compose (v1, Debian's) validates the file without a container engine.
	@command -v docker-compose >/dev/null || $(APT_INSTALL) --no-install-recommends docker-compose
	# (the file demands a SECRET_KEY; any value validates it)
	SECRET_KEY=lint-only-placeholder docker-compose config -q
	# Known vulnerabilities and yanked pins of the locked dependencies fail; newer releases are
	# reported as news only (pip-audit's data source is out of reach here: see its docstring).
	$(VENV)/bin/python scripts/audit_deps.py requirements/test.txt

# The inner loop (about 40 s here): the code's checks plus the unit tests, in two processes;
# without the browser, fault, Celery-worker, operations (process-spawning) and long property-based
# tests, which make test runs.
check: lint-code
	SERVICES="postgres redis anvil" scripts/with-services.sh $(VENV)/bin/pytest -q -n 2 \
	  --ignore=tests/browser --ignore=tests/faults --ignore=tests/test_randomized.py \
	  --ignore=tests/test_schemathesis.py --ignore=lending/tests/test_state_machine.py \
	  --ignore=tests/ops -m "not celery_worker" $(PYTEST_ARGS)

test: lint
	scripts/with-services.sh $(VENV)/bin/pytest $(PYTEST_ARGS)

# --- translations (issue 20) ---
# Re-extracts every marked string into locale/<lang>/LC_MESSAGES/django.po (GNU gettext's
# xgettext); translators fill the msgstr. The .mo files are built, never committed:
# `manage.py compilecatalogs` (Babel, pure Python) in scripts/run.sh, the Dockerfile and the tests.
# tests/test_i18n.py fails when a marked string is missing from the catalogues.
MESSAGES_IGNORE = .venv node_modules '*/tests/*' tests bench staticfiles examples contracts .data
messages: venv
	@command -v xgettext >/dev/null || $(APT_INSTALL) --no-install-recommends gettext
	DATABASE_URL=postgres://localhost/x REDIS_URL=redis://localhost/0 $(VENV)/bin/python manage.py \
	  makemessages -l es -l pt_BR -l ru -l ar --add-location=file $(MESSAGES_IGNORE:%=--ignore=%)
	sed -i '/^"POT-Creation-Date: /d' locale/*/LC_MESSAGES/django.po
# --- end translations ---

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache staticfiles
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
