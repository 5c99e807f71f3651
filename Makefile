# Entry points: `make demo` (a real cutover on a local demo fleet) and `make test` (everything CI runs).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VENV       := .venv
PY         := $(VENV)/bin/python
COLLECTIONS := $(CURDIR)/$(VENV)/collections
ANSIBLE_BUNDLE := ansible==12.3.0
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export MTPROXY_TEST_COLLECTIONS_PATH := $(COLLECTIONS)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

SCENARIOS ?=

.PHONY: help venv unit changelog integration lint sanity engine image scenarios test demo bench build clean

help:
	@echo "make demo   - run cutover.yml then rollback.yml on a local fleet of systemd containers"
	@echo "make test   - unit, changelog, module, lint, sanity and Molecule scenario tests"
	@echo "make build  - the collection tarball in build/ (ansible-galaxy collection build)"
	@echo "make bench  - flip window, fleet scale and judge cost benchmarks"

$(VENV)/.installed: requirements/test.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/test.txt
	touch $@

# community.docker and ansible.posix come from the ansible bundle wheel (Galaxy is not reachable).
$(VENV)/.collections: $(VENV)/.installed
	rm -rf $(COLLECTIONS) $(VENV)/dl && mkdir -p $(COLLECTIONS)/ansible_collections/mtproxy $(VENV)/dl
	$(PY) -m pip download -q --no-deps -d $(VENV)/dl '$(ANSIBLE_BUNDLE)'
	$(PY) tests/hosts/extract_collections.py $(VENV)/dl/*.whl $(COLLECTIONS) community/docker community/library_inventory_filtering_v1 ansible/posix
	ln -sfn $(CURDIR) $(COLLECTIONS)/ansible_collections/mtproxy/cutover
	touch $@

venv: $(VENV)/.collections

unit: venv
	$(PY) -m pytest tests/unit -q

integration: venv engine image
	MOLECULE_HOST_IMAGE=$$(tests/hosts/build-image.sh) $(PY) -m pytest tests/integration -q

changelog: venv
	antsibull-changelog lint

# ansible-lint as a user runs it in a checkout (no --offline): it resolves this collection from the
# checkout and installs tests/requirements.yml into .ansible/. The pinned copies of those collections
# are put there first, so that no Galaxy is needed (CI has none).
lint: venv
	mkdir -p .ansible/collections/ansible_collections
	for ns in community ansible; do ln -sfn $(COLLECTIONS)/ansible_collections/$$ns .ansible/collections/ansible_collections/$$ns; done
	ansible-lint --profile production -q

build: venv
	ansible-galaxy collection build --force --output-path build/

sanity: venv
	tests/sanity/run-sanity.sh

engine:
	tests/hosts/docker-engine.sh

image: engine
	tests/hosts/build-image.sh >/dev/null

scenarios: venv engine image
	MOLECULE_HOST_IMAGE=$$(tests/hosts/build-image.sh) tests/hosts/run-scenarios.sh $(SCENARIOS)

test: unit changelog lint sanity integration scenarios

demo: venv engine image
	tests/hosts/demo.sh

bench: venv engine image
	MOLECULE_HOST_IMAGE=$$(tests/hosts/build-image.sh) $(PY) tests/bench/run_bench.py
	MOLECULE_HOST_IMAGE=$$(tests/hosts/build-image.sh) $(PY) tests/bench/container_flip.py

clean:
	$(PY) tests/hosts/fleet.py down --all || true
	$(PY) tests/hosts/container_fleet.py down --all || true
	rm -rf $(VENV) .venv-sanity artifacts build
