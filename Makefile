# tcplab - run `make help`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SCENARIO ?= idle
PROFILE ?=
PROFILES ?=
BACKEND ?=
N ?=
BYTES ?=
LAB ?=
LEVELS ?=
FAMILY ?=
SERVER ?=
REPEAT ?=
KERNELS ?=
CLIENTS ?=
ROUTER ?=
LEDGER ?=
ARGS ?=
RESULTS ?= results
SITE ?= site

RUN_ARGS = --scenario $(SCENARIO) \
  $(if $(PROFILE),--profile $(PROFILE)) \
  $(foreach p,$(PROFILES),--profile $(p)) \
  $(if $(BACKEND),--backend $(BACKEND)) \
  $(if $(N),-n $(N)) \
  $(if $(BYTES),--bytes $(BYTES)) \
  $(if $(LAB),--lab $(LAB)) \
  $(if $(LEVELS),--levels $(LEVELS)) \
  $(if $(REPEAT),--repeat $(REPEAT)) \
  $(if $(KERNELS),--kernels "$(KERNELS)") \
  $(if $(FAMILY),--family $(FAMILY)) \
  $(if $(CLIENTS),--clients $(CLIENTS)) \
  $(if $(ROUTER),--router $(ROUTER)) \
  $(if $(SERVER),--server $(SERVER)) \
  $(if $(LEDGER),--ledger) $(ARGS)

.PHONY: help lab test unit images clean wipe lint install wheel site

help: ## list targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'
	@echo "  variables: SCENARIO=idle|c2s|s2c|timewait PROFILE=NAME BACKEND=netns|docker|auto N=10000 BYTES=13 LAB=FILE KERNELS=\"6.1 6.12 host\" CLIENTS=4 ROUTER=nat|plain"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install tcplab into it

lab: $(STAMP) ## run a scenario: make lab SCENARIO=s2c [PROFILE=..] [BACKEND=..] [N=..] [BYTES=..]
	$(BIN)/tcplab run $(RUN_ARGS)

test: $(STAMP) ## run the whole test suite (root: namespaces; docker tests need a daemon)
	$(BIN)/python -m pytest -q -ra

unit: $(STAMP) ## run the unit tests only (no root needed)
	$(BIN)/python -m pytest -q tests/unit

site: $(STAMP) ## publish every run as one static site: make site [RESULTS=results] [SITE=site]
	$(BIN)/tcplab site $(RESULTS) -o $(SITE)

images: $(STAMP) ## build the lab node image (offline with debootstrap when no registry answers)
	$(BIN)/tcplab images

wheel: $(STAMP) ## build the installable package into dist/ (pip install dist/tcplab-*.whl)
	rm -rf build  # setuptools never empties build/lib: a removed module would stay in the wheel
	$(BIN)/python -m pip wheel --no-deps --disable-pip-version-check -q . -w dist
	rm -rf build

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .

wipe clean: $(STAMP) ## remove everything tcplab runs left behind (namespaces, containers, sysctls)
	$(BIN)/tcplab wipe $(if $(LAB),--lab $(LAB))
