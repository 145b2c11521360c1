# make run   - set up .venv and start the sensor in the foreground on the default-route interface
#              with etc/malsensor.toml and the shipped default model (CAPTURE=FILE replays a file)
# make test  - set up .venv (and, as root, the Debian tools the tests use) and run the whole suite
# make fuzz  - the fuzz harnesses (captures, configs, artifacts, trainer files) with many more cases
#              (FUZZ_CASES per harness, default 2000; MALSENSOR_FUZZ_SEED=N replays from seed N)
# make bench - run the benchmarks under bench/ side by side with the reference tools
# make deb   - build malsensor_VERSION_ARCH.deb (docs/packaging.md), check it with lintian
#              (DEB_EXTRAS=train also packages malsensor-train and its dependencies)
# make dataset-proc - record the labelled process-activity dataset (docs/proc.md) into PROC_DATA
#              (as root: each recording's workloads in a cgroup v2 of their own)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
DATA ?= ../shared/data
CAPTURE ?=
RUN_DIR := .run
# Debian packages: systemd-python's build, libpcap (BPF compilation), the reference tools the
# conformance tests and benchmarks run side by side, what the real-systemd test boots with, and the
# redis server and the log shipper (rsyslog) the fleet-output tests run.
DEB_PACKAGES := libsystemd-dev pkg-config gcc libpcap0.8 argus-server argus-client tshark tcpreplay tcpdump \
	iproute2 debootstrap systemd-container util-linux netbase libipt2 libipt-dev redis-server \
	rsyslog rsyslog-hiredis rsyslog-kafka rsyslog-elasticsearch \
	dpkg-dev debhelper fakeroot lintian python3.11 python3.11-venv python3.11-dev

PROC_DATA ?= data/proc
PROC_RUNS ?= 10
PROC_DURATION ?= 14
PROC_INTERVAL ?= 0.25
PROC_PROCESSES ?= 32

.PHONY: run test fuzz bench venv debs deb clean dataset-proc

debs:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages: $$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	  fi; \
	else echo "not root: skipping apt-get (install $(DEB_PACKAGES) yourself)"; fi

$(VENV)/.stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[train,test]'
	# byte-compile the checkout, as an installed package is (under PYTHONDONTWRITEBYTECODE=1 the
	# editable sources were compiled at every start: ~40 ms of a small `malsensor extract`)
	$(VPY) -m compileall -q daemon models >/dev/null
	touch $@

venv: debs $(VENV)/.stamp

run: venv
	mkdir -p $(RUN_DIR)
	$(VENV)/bin/malsensord -c etc/malsensor.toml --models-dir contrib/models --log-dir $(RUN_DIR) --user "" \
	  $(if $(CAPTURE),--replay $(CAPTURE))

test: venv
	$(VPY) -m pytest $(PYTEST_ARGS)

FUZZ_CASES ?= 2000
fuzz: venv
	MALSENSOR_FUZZ_CASES=$(FUZZ_CASES) $(VPY) -m pytest -m fuzz $(PYTEST_ARGS)

bench: venv
	$(VPY) bench/run.py

# The package is built from a copy of the sources in build/deb/malsensor-VERSION (so the
# checkout stays clean and dpkg-buildpackage's outputs land in build/deb): wheels of
# malsensor and of its dependencies at the versions pinned by this .venv (pip's cache
# makes a rebuild fast; the first one needs the network), then dpkg-buildpackage offline.
# The wheels are made by Debian's own python3.11 (a build environment in build/deb), not
# by whatever python made .venv: systemd-python is compiled there, against Debian's
# headers, with no run path into another interpreter's installation (pip's wheel cache is
# keyed by the source, not by the interpreter, so this environment keeps its own cache).
DEB_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DEB_ARCH = $(shell dpkg --print-architecture)
DEB_EXTRAS ?=
DEB_DIR := build/deb
DEB_SRC := $(DEB_DIR)/malsensor-$(DEB_VERSION)
DEB_FILE = malsensor_$(DEB_VERSION)_$(DEB_ARCH).deb

deb: venv
	@grep -q '^malsensor ($(DEB_VERSION))' debian/changelog || \
	  { echo "debian/changelog: no entry for version $(DEB_VERSION) of pyproject.toml" >&2; exit 2; }
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_SRC)/wheels
	tar -c --exclude=__pycache__ --exclude='*.pyc' --exclude='_aot*.so' pyproject.toml setup.py README.md daemon models etc \
	  contrib debian \
	  | tar -x -C $(DEB_SRC)
	$(VPY) -m pip freeze --exclude-editable > $(DEB_SRC)/wheels/constraints.txt
	echo '$(DEB_EXTRAS)' > $(DEB_SRC)/wheels/extras
	/usr/bin/python3.11 -m venv $(DEB_DIR)/buildenv
	export PIP_CACHE_DIR=$(CURDIR)/build/pip-cache-deb MALSENSOR_AOT_CPU=generic; \
	$(DEB_DIR)/buildenv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip wheel setuptools && \
	$(DEB_DIR)/buildenv/bin/python -m pip wheel -q --disable-pip-version-check -w $(DEB_SRC)/wheels \
	  -c $(DEB_SRC)/wheels/constraints.txt \
	  '$(CURDIR)/$(DEB_SRC)$(if $(DEB_EXTRAS),[$(DEB_EXTRAS)])'
	rm -rf $(DEB_SRC)/build $(DEB_SRC)/*.egg-info
	cd $(DEB_SRC) && dpkg-buildpackage -b -us -uc
	cp $(DEB_DIR)/$(DEB_FILE) .
	lintian --fail-on error,warning $(DEB_FILE)
	@echo "built $(DEB_FILE)"

dataset-proc: venv
	$(VENV)/bin/malsensor-train dataset-proc --out $(PROC_DATA) --runs $(PROC_RUNS) --duration $(PROC_DURATION) \
	  --interval $(PROC_INTERVAL) --processes $(PROC_PROCESSES) --by-behaviour

clean:
	rm -rf $(VENV) build *.egg-info malsensor_*.deb
