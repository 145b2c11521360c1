# make run   - set up .venv and start the sensor in the foreground on the default-route interface
#              with etc/malsensor.toml and the shipped default model (CAPTURE=FILE replays a file)
# make test  - set up .venv (and, as root, the Debian tools the tests use) and run the whole suite
# make bench - run the benchmarks under bench/ side by side with the reference tools
# make dataset-proc - record the labelled process-activity dataset (docs/proc.md) into PROC_DATA
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
	rsyslog rsyslog-hiredis rsyslog-kafka rsyslog-elasticsearch

PROC_DATA ?= data/proc
PROC_RUNS ?= 3
PROC_DURATION ?= 120

.PHONY: run test bench venv debs clean dataset-proc

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

bench: venv
	$(VPY) bench/run.py

dataset-proc: venv
	$(VENV)/bin/malsensor-train dataset-proc --out $(PROC_DATA) --runs $(PROC_RUNS) --duration $(PROC_DURATION)

clean:
	rm -rf $(VENV) build *.egg-info
