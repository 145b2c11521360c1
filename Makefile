# make run   - set up .venv and start the sensor in the foreground on the default-route interface
#              with etc/malsensor.toml and the shipped default model (CAPTURE=FILE replays a file)
# make test  - set up .venv (and, as root, the Debian tools the tests use) and run the whole suite
# make fuzz  - the fuzz harnesses (captures, configs, artifacts, trainer files) with many more cases
#              (FUZZ_CASES per harness, default 2000; MALSENSOR_FUZZ_SEED=N replays from seed N)
# make bench - run the benchmarks under bench/ side by side with the reference tools
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
DATA ?= ../shared/data
CAPTURE ?=
RUN_DIR := .run
# Debian packages: systemd-python's build, libpcap (BPF compilation), the reference tools the
# conformance tests and benchmarks run side by side, and what the real-systemd test boots with.
DEB_PACKAGES := libsystemd-dev pkg-config gcc libpcap0.8 argus-server argus-client tshark tcpreplay tcpdump \
	iproute2 debootstrap systemd-container util-linux netbase

.PHONY: run test fuzz bench venv debs clean

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

clean:
	rm -rf $(VENV) build *.egg-info
