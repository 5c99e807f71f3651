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
# The oldest and the newest supported ansible-core (meta/runtime.yml), each in a venv of its own on
# the Python named in requirements/core-<version>.txt (found by tests/hosts/find-python.sh).
CORES      := 2.16 2.21
CORE_VENVS := $(foreach core,$(CORES),.venv-core$(core)/.installed)

.PHONY: help venv cores unit unit-pythons unit-pythons-image changelog integration integration-cores lint sanity checks engine \
	image image-trixie scenarios importer test demo bench build clean

help:
	@echo "make demo   - run cutover.yml then rollback.yml on a local fleet of systemd containers"
	@echo "make test   - unit, changelog, module, lint, sanity, Galaxy import and Molecule scenario tests"
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

.venv-core%/.installed: requirements/core-%.txt
	rm -rf .venv-core$*
	"$$(tests/hosts/find-python.sh "$$(sed -n 's/^# python: //p' $<)")" -m venv .venv-core$*
	.venv-core$*/bin/python -m pip install -q -r $<
	touch $@

cores: $(CORE_VENVS)

# galaxy-importer (what Galaxy runs on an upload) in a venv of its own: its pins differ from ours.
.venv-importer/.installed: requirements/importer.txt
	rm -rf .venv-importer
	"$$(tests/hosts/find-python.sh "$$(sed -n 's/^# python: //p' $<)")" -m venv .venv-importer
	.venv-importer/bin/python -m pip install -q -r $<
	touch $@

# The unit tests mostly wait on the stand-in's processes and sockets (80 s of CPU in a 188 s run
# here): 3 workers on 2 cores take 85 s. -p no:xdist (or -n 0) runs them in one process.
UNIT_WORKERS ?= 3
unit: venv
	$(PY) -m pytest tests/unit -q -n $(UNIT_WORKERS)

# The unit tests again on Python 3.12 (ansible-core 2.16) and 3.13 (2.21), each in another random
# order (pytest-random-order; the seed is printed, --random-order-seed=N -n 0 repeats the order in one
# process): a test that passes only after another one, or only by luck, fails here. One after the
# other: at once, the load alone failed a timing test of the stand-in (tests/output/unit-<core>.log
# has each run).
UNIT_PASSES = $(foreach core,$(CORES),unit-$(core) \
	".venv-core$(core)/bin/python -m pytest tests/unit -q -n $(UNIT_WORKERS) -p no:cacheprovider --random-order-seed=$$RANDOM")
unit-pythons: venv cores
	tests/hosts/at-once.sh -j 1 $(UNIT_PASSES)

# make test builds the Debian 13 image meanwhile: debootstrap waits on downloads and the disk, not on
# the CPU (about 2 minutes less than one after the other).
unit-pythons-image: venv cores engine
	tests/hosts/at-once.sh -j 2 image-trixie "tests/hosts/build-image.sh trixie" $(UNIT_PASSES)

integration: venv engine image
	MOLECULE_HOST_IMAGE=$$(tests/hosts/build-image.sh) $(PY) -m pytest tests/integration -q

# The module tests and the playbooks against unreachable hosts on the oldest (2.16) and the newest (2.21)
# supported ansible-core: 2.16 on Debian 12 hosts (Python 3.11), 2.21 on Debian 13 hosts (Python 3.13,
# systemd 257). The default venv's 2.19 runs every module end to end in the scenarios (make scenarios) and
# every file here in `make integration`; a third run of these files here cost CI about 6 minutes.
# The playbooks against booted hosts run once each, split so that the two end together (measured alone:
# the lock tests 181 s, the hosts tests 129 s): the run lock's with 2.16, the rest with 2.21.
# Both at once: most of each is waiting for hosts and windows (tests/output/integration-<core>.log).
# test_container_fleet.py tests the harness, not the collection: it runs once.
HARNESS_TESTS := tests/integration/test_container_fleet.py
LOCK_PLAYBOOK_TESTS := tests/integration/test_playbooks_lock.py
HOST_PLAYBOOK_TESTS := tests/integration/test_playbooks_hosts.py
CORE_TESTS := $(filter-out $(HARNESS_TESTS) $(LOCK_PLAYBOOK_TESTS) $(HOST_PLAYBOOK_TESTS),$(wildcard tests/integration/test_*.py))
integration-cores: venv cores engine image image-trixie
	tests/hosts/at-once.sh \
	  integration-2.16 "MOLECULE_HOST_IMAGE=$$(tests/hosts/build-image.sh) .venv-core2.16/bin/python -m pytest -q $(CORE_TESTS) $(HARNESS_TESTS) $(LOCK_PLAYBOOK_TESTS)" \
	  integration-2.21 "MOLECULE_HOST_IMAGE=$$(tests/hosts/build-image.sh trixie) .venv-core2.21/bin/python -m pytest -q $(CORE_TESTS) $(HOST_PLAYBOOK_TESTS)"

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

# ansible-test sanity with the oldest and the newest supported ansible-core, shellcheck on PATH (the
# venv's); with 2.16, the modules also compile and import on Python 3.6, the oldest target it manages.
sanity: venv
	SANITY_TARGET_PYTHONS=3.6 tests/sanity/run-sanity.sh 2.16
	tests/sanity/run-sanity.sh 2.21

# What Galaxy's importer says of the tarball (tests/unit/test_packaging.py builds it).
importer: venv .venv-importer/.installed
	MTPROXY_GALAXY_IMPORTER=$(CURDIR)/.venv-importer/bin/python $(PY) -m pytest -q tests/unit/test_packaging.py -k importer

engine:
	tests/hosts/docker-engine.sh

image: engine
	tests/hosts/build-image.sh >/dev/null

image-trixie: engine
	tests/hosts/build-image.sh trixie >/dev/null

scenarios: venv engine image image-trixie
	MOLECULE_HOST_IMAGE=$$(tests/hosts/build-image.sh) MOLECULE_TRIXIE_IMAGE=$$(tests/hosts/build-image.sh trixie) \
	  tests/hosts/run-scenarios.sh $(SCENARIOS)

# ansible-test sanity keeps one core busy (2.21: 155 s of CPU in a 150 s run here) and ansible-lint
# with Galaxy's importer fill the other, so make test runs the two lines at once (each logs to
# tests/output/<name>.log). The two sanity runs stay one after the other: they share ansible-test's cache.
checks: venv .venv-importer/.installed
	tests/hosts/at-once.sh \
	  lint-importer "$(MAKE) --no-print-directory lint importer" \
	  sanity "$(MAKE) --no-print-directory sanity"

test: unit unit-pythons-image changelog checks integration-cores scenarios

demo: venv engine image
	tests/hosts/demo.sh

bench: venv engine image
	MOLECULE_HOST_IMAGE=$$(tests/hosts/build-image.sh) $(PY) tests/bench/run_bench.py
	MOLECULE_HOST_IMAGE=$$(tests/hosts/build-image.sh) $(PY) tests/bench/container_flip.py

clean:
	$(PY) tests/hosts/fleet.py down --all || true
	$(PY) tests/hosts/container_fleet.py down --all || true
	rm -rf $(VENV) .venv-* artifacts build
