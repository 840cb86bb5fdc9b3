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
PARALLEL ?=
CLIENTS ?=
ROUTER ?=
LINK ?=
LINK_ENGINE ?=
LEDGER ?=
SWEEP ?=
ARGS ?=
RESULTS ?= results
SITE ?= site

RUN_ARGS = --scenario "$(SCENARIO)" \
  $(if $(PROFILE),--profile $(PROFILE)) \
  $(foreach p,$(PROFILES),--profile $(p)) \
  $(if $(BACKEND),--backend $(BACKEND)) \
  $(if $(N),-n $(N)) \
  $(if $(BYTES),--bytes $(BYTES)) \
  $(if $(LAB),--lab $(LAB)) \
  $(if $(LEVELS),--levels $(LEVELS)) \
  $(if $(REPEAT),--repeat $(REPEAT)) \
  $(if $(KERNELS),--kernels "$(KERNELS)") \
  $(if $(SWEEP),--sweep "$(SWEEP)") \
  $(if $(PARALLEL),--parallel $(PARALLEL)) \
  $(if $(FAMILY),--family $(FAMILY)) \
  $(if $(CLIENTS),--clients $(CLIENTS)) \
  $(if $(ROUTER),--router $(ROUTER)) \
  $(if $(LINK),--link "$(LINK)") \
  $(if $(LINK_ENGINE),--link-engine $(LINK_ENGINE)) \
  $(if $(SERVER),--server $(SERVER)) \
  $(if $(LEDGER),--ledger) $(ARGS)

.PHONY: help lab test unit images clean wipe lint install wheel site

help: ## list targets and variables
	@grep -E '^[a-z][a-z ]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'
	@echo "variables of make lab (tcplab run --help has the options they set):"
	@echo "  SCENARIO=NAME       a scenario in scenarios/ (default idle; tcplab scenarios lists them)"
	@echo "  PROFILE=NAME        a sysctl profile in lab/profiles/ (default: the lab file's)"
	@echo "  PROFILES=\"A B\"      one run per profile, compared side by side"
	@echo "  BACKEND=NAME        netns, docker, auto (docker when a daemon answers), ssh, vm"
	@echo "  N=COUNT             connections (default: the scenario's)"
	@echo "  BYTES=COUNT         bytes per connection (c2s, s2c, orphan, bulk)"
	@echo "  LEVELS=K            ramp in K steps: bytes per connection as a slope"
	@echo "  REPEAT=K            K runs, fresh hosts each: median, range, spread"
	@echo "  FAMILY=ipv4|ipv6    address family (default ipv4)"
	@echo "  SERVER=blocking|epoll  server model (default blocking)"
	@echo "  KERNELS=\"6.1 host\"  boot these kernels in VMs, one run each, compared (all: every series)"
	@echo "  SWEEP=\"KEY=V1,V2\"   one run per value of a sysctl or link key, one sweep report (docs/conditions.md)"
	@echo "  PARALLEL=K          KERNELS: at most K kernels' VMs at once (default: memory decides, up to 2)"
	@echo "  CLIENTS=K           K client hosts, each its own address (docs/topologies.md)"
	@echo "  ROUTER=plain|nat    a router between clients and server; nat masquerades them"
	@echo "  LINK=\"delay=25ms rate=200mbit\"  link conditions: delay (one-way), jitter, loss, rate, queue (docs/conditions.md)"
	@echo "  LINK_ENGINE=NAME    netem, fallback (the delay line) or auto (default)"
	@echo "  LEDGER=1            trace live kernel allocations per host and call site (docs/ledger.md)"
	@echo "  LAB=FILE            lab file (default lab/default.yaml); also read by make clean"
	@echo "  ARGS=\"--flags\"      more tcplab run options, e.g. ARGS=\"--wait 600 -v\""
	@echo "commands: .venv/bin/tcplab (or . .venv/bin/activate, then tcplab); tests: .venv/bin/python -m pytest"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install tcplab into it

lab: $(STAMP) ## run a scenario: make lab SCENARIO=s2c [PROFILE=..] [BACKEND=..] [N=..] [BYTES=..]
	$(BIN)/tcplab run $(RUN_ARGS)

test: $(STAMP) ## run the whole test suite (root: namespaces; docker tests need a daemon)
	$(BIN)/python -m pytest -q -ra -n 2 tests/unit
	$(BIN)/python -m pytest -q -ra tests/integration

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
