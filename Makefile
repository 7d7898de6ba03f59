# Waspada: every way to run anything is a target here (README: `make run`, `make test`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INFRA := infra/local/infra.sh
export WASPADA_ENV ?= dev
export KAFKA_BOOTSTRAP_SERVERS ?= 127.0.0.1:9092
export MONGODB_URI ?= mongodb://127.0.0.1:27017/?directConnection=true


.PHONY: lock install web-assets web-catalogs web-perf web-staff-perf infra-up infra-down topics run up down status token admin resend-failed test test-some test-unit test-integration test-e2e bench bench-history bench-recruiter bench-growth bench-sign-in lint clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[test,local]'
	touch $(STAMP)

lock: ## re-pin every transitive dependency after changing pyproject.toml
	$(PY) -m pip freeze --exclude-editable > requirements.lock

install: $(STAMP) web-assets /usr/bin/chromium ## Python environment, Kafka jars, FerretDB runner, Debian's PostgreSQL, web assets, Chromium (all cached after the first time)
	$(INFRA) install

# The web service's front-end libraries come from npm through the committed lock file; what it serves is copied
# into the git-ignored static/vendor/. Browser tests drive Debian's Chromium (never a downloaded browser).
WEB := services/web
$(WEB)/node_modules/.package-lock.json: $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error

$(WEB)/static/vendor/htmx.min.js: $(WEB)/node_modules/.package-lock.json
	mkdir -p $(WEB)/static/vendor && cp $(WEB)/node_modules/htmx.org/dist/htmx.min.js $@

web-assets: $(WEB)/static/vendor/htmx.min.js

/usr/bin/chromium:
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

web-catalogs: $(STAMP) ## re-extract the web pages' strings into services/web/locales/*/messages.po
	$(PY) -m services.web.catalogs

web-perf: install ## page weights and time to interactive of the report form on an emulated slow phone (fresh test instance)
	$(TEST_INFRA) $(INFRA) fresh
	$(TEST_INFRA) $(PY) -m shared.kafka --bootstrap 127.0.0.1:$(T_KAFKA)
	$(TEST_INFRA) $(PY) -m tests.web_perf; rc=$$?; $(TEST_INFRA) $(INFRA) stop; exit $$rc

web-staff-perf: install ## staff pages' weight and server time with 10 000 cases stored (CASES through the pipeline, copies up to GROW; fresh test instance)
	$(TEST_INFRA) $(INFRA) fresh
	$(TEST_INFRA) $(PY) -m shared.kafka --bootstrap 127.0.0.1:$(T_KAFKA)
	$(TEST_INFRA) $(PY) -m tests.web_staff_perf --cases $(or $(CASES),300) --grow $(or $(GROW),10000) $(if $(SHOTS),--shots $(SHOTS)); rc=$$?; $(TEST_INFRA) $(INFRA) stop; exit $$rc

infra-up: install ## start Kafka and FerretDB on loopback and create the topics
	$(INFRA) start
	$(PY) -m shared.kafka --bootstrap $(KAFKA_BOOTSTRAP_SERVERS)

infra-down:
	$(INFRA) stop

run: install ## the whole system in the foreground under supervisord (restarts a service that dies); Ctrl-C stops everything it started
	$(PY) -m infra.local.supervise run

up: install ## the whole system in the background under supervisord
	$(PY) -m infra.local.supervise up

down: ## stop supervisord and its services, Kafka and FerretDB (and a test instance left running)
	-$(PY) -m infra.local.supervise down
	$(INFRA) stop
	$(TEST_INFRA) $(INFRA) stop

status:
	$(INFRA) status
	-$(PY) -m infra.local.supervise status

token: $(STAMP) ## dev only: a 15-minute token, make token ROLE=reporter REGION=36.03.11.2009 [UNIT=polresta_tangerang] [SUB=user-1]
	@$(PY) -m shared.auth --role $(ROLE) --region $(REGION) $(if $(UNIT),--unit $(UNIT)) $(if $(SUB),--sub $(SUB))

resend-failed: $(STAMP) ## publish again the outbox entries marked failed, once their cause is fixed [SERVICE=intake]
	$(PY) -m shared.outbox resend $(if $(SERVICE),--service $(SERVICE))

admin: install ## the first admin: make admin USERNAME=198001012005011001 REGION=36 (prompts for a password, prints the TOTP QR code)
	$(INFRA) start
	$(PY) -m shared.kafka --bootstrap $(KAFKA_BOOTSTRAP_SERVERS)
	$(PY) -m services.identity admin --username $(USERNAME) --region $(REGION) $(if $(NAME),--name "$(NAME)")

# `make test` has its own Kafka and FerretDB (other ports, fresh data each run), so it neither sees nor
# disturbs what `make run` holds; it stops them when the tests end.
# TEST_PORT_OFFSET moves all of them (and the e2e service copies) so two checkouts can test side by side.
TEST_PORT_OFFSET ?= 0
T_KAFKA := $(shell echo $$((19092 + $(TEST_PORT_OFFSET))))
T_CONTROLLER := $(shell echo $$((19093 + $(TEST_PORT_OFFSET))))
T_FERRET := $(shell echo $$((27018 + $(TEST_PORT_OFFSET))))
T_POSTGRES := $(shell echo $$((15432 + $(TEST_PORT_OFFSET))))
T_E2E := $(shell echo $$((18000 + $(TEST_PORT_OFFSET))))
TEST_INFRA := WASPADA_INFRA_DIR=$(CURDIR)/.local-infra/test KAFKA_PORT=$(T_KAFKA) KAFKA_CONTROLLER_PORT=$(T_CONTROLLER) \
	FERRETDB_PORT=$(T_FERRET) POSTGRES_PORT=$(T_POSTGRES) KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(T_KAFKA) WASPADA_E2E_PORT_BASE=$(T_E2E) \
	MONGODB_URI=mongodb://127.0.0.1:$(T_FERRET)/?directConnection=true
PYTEST_ARGS ?=

test: install ## every test tier against a real Kafka and FerretDB started for the run
	$(TEST_INFRA) $(INFRA) fresh
	$(TEST_INFRA) $(PY) -m shared.kafka --bootstrap 127.0.0.1:$(T_KAFKA)
	$(TEST_INFRA) $(PY) -m pytest tests -q $(PYTEST_ARGS); rc=$$?; $(TEST_INFRA) $(INFRA) stop; exit $$rc

test-some: install ## TESTS="tests/unit/x.py tests/integration/y.py": start the test Kafka/FerretDB if needed (left running) and run TESTS
	$(TEST_INFRA) $(INFRA) start
	$(TEST_INFRA) $(PY) -m shared.kafka --bootstrap 127.0.0.1:$(T_KAFKA)
	$(TEST_INFRA) $(PY) -m pytest $(TESTS) -q $(PYTEST_ARGS)

test-unit: install ## pure tests, no broker or database
	$(PY) -m pytest tests/unit tests/contract -q

test-integration test-e2e: install
	$(TEST_INFRA) $(INFRA) start
	$(TEST_INFRA) $(PY) -m shared.kafka --bootstrap 127.0.0.1:$(T_KAFKA)
	$(TEST_INFRA) $(PY) -m pytest tests/$(subst test-,,$@) -q $(PYTEST_ARGS)

bench: install ## whole-path throughput and latencies as ratios to Kafka/database ceilings and a synchronous app (BENCH_ARGS="--rate 20 --reports 500"), then tests/bench_history.py if present on a fresh instance of its own (the bench's leftovers would be its templates); fresh test instance
	$(TEST_INFRA) $(INFRA) fresh
	$(TEST_INFRA) $(PY) -m shared.kafka --bootstrap 127.0.0.1:$(T_KAFKA)
	$(TEST_INFRA) $(PY) -m tests.bench $(BENCH_ARGS) && if [ -f tests/bench_history.py ]; then \
		$(TEST_INFRA) $(INFRA) fresh && $(TEST_INFRA) $(PY) -m shared.kafka --bootstrap 127.0.0.1:$(T_KAFKA) && \
		$(TEST_INFRA) $(PY) -m tests.bench_history $(BENCH_HISTORY_ARGS); fi; rc=$$?; $(TEST_INFRA) $(INFRA) stop; exit $$rc

bench-history: install ## the list endpoints with 1,000 and 100,000 stored cases (CASES="1000 100000"), on a fresh test instance
	$(TEST_INFRA) $(INFRA) fresh
	$(TEST_INFRA) $(PY) -m shared.kafka --bootstrap 127.0.0.1:$(T_KAFKA)
	$(TEST_INFRA) $(PY) -m tests.bench_history --cases $(or $(CASES),1000 100000); rc=$$?; $(TEST_INFRA) $(INFRA) stop; exit $$rc

bench-recruiter: install ## reports all naming one recruiter until all are screened (RECRUITER_ARGS="--reports 100"), on a fresh test instance
	$(TEST_INFRA) $(INFRA) fresh
	$(TEST_INFRA) $(PY) -m tests.bench_recruiter $(RECRUITER_ARGS); rc=$$?; $(TEST_INFRA) $(INFRA) stop; exit $$rc

bench-growth: install ## what a sweeper round, a report's watch-list lookup and the directory page cost as what is stored grows (SIZES="100 1000 5000"), on a fresh test instance
	$(TEST_INFRA) $(INFRA) fresh
	$(TEST_INFRA) $(PY) -m tests.bench_growth --sizes $(or $(SIZES),100 1000 5000); rc=$$?; $(TEST_INFRA) $(INFRA) stop; exit $$rc

bench-sign-in: install ## sign-in time with the production Argon2id parameters, on a fresh test instance
	$(TEST_INFRA) $(INFRA) fresh
	$(TEST_INFRA) $(PY) -m shared.kafka --bootstrap 127.0.0.1:$(T_KAFKA)
	$(TEST_INFRA) $(PY) -m tests.bench_sign_in; rc=$$?; $(TEST_INFRA) $(INFRA) stop; exit $$rc

lint: install ## pyflakes-level checks (unused names, undefined names, syntax)
	$(PY) -m ruff check --select F,E9 services shared tests infra

clean: down
	rm -rf .local-infra $(VENV)
