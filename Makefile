# onebox: `make run` starts everything on this machine; `make test` runs every test.
# Prerequisites: Python >= 3.11, a JDK >= 17 with Maven, make. Everything else is installed here.

SHELL := /bin/bash
PORT ?= 8000
UV_VERSION := 0.9.30
UV := .tools/bin/uv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy

.PHONY: install run test fuzz bench bench-tools mongo-server sshd browser qa-tools qemu qemu-image clean

install: .venv/.synced mongo-server sshd

# uv, pinned, in its own small virtualenv (no global installs).
$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The project's virtualenv, exactly as locked in uv.lock.
.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

# The embedded database: mongo-java-server (H2 file backend) behind onebox's launcher (tools/mongo-server),
# its jars from Maven Central at the versions pinned in the pom, run on the machine's JDK.
MONGO_SERVER_SOURCES := tools/mongo-server/pom.xml $(wildcard tools/mongo-server/src/main/java/onebox/db/*.java)
mongo-server: .bin/mongo-server/onebox-db.jar
.bin/mongo-server/onebox-db.jar: $(MONGO_SERVER_SOURCES)
	@if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then \
		echo "installing a JDK and Maven for the embedded database"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq default-jdk-headless maven; \
	fi
	cd tools/mongo-server && mvn -q -B -DskipTests package
	rm -rf .bin/mongo-server && mkdir -p .bin/mongo-server
	cp -r tools/mongo-server/target/lib .bin/mongo-server/lib
	cp tools/mongo-server/target/onebox-db.jar .bin/mongo-server/onebox-db.jar

# The local provider runs one sshd per instance.
sshd:
	@if ! command -v sshd >/dev/null && [ ! -x /usr/sbin/sshd ]; then \
		echo "installing openssh-server for the local provider"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openssh-server openssh-client; \
	fi

# The web dashboard's tests drive Debian's Chromium through Playwright; no browser is downloaded.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing chromium for the web dashboard's browser tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; \
	fi

# The qemu provider runs real VMs: QEMU, and what builds its Debian guest image (only what is missing).
QEMU_PACKAGES := qemu-system-x86 qemu-utils mmdebstrap e2fsprogs genisoimage
QEMU_TOOLS := qemu-system-x86_64 qemu-img mmdebstrap mkfs.ext4 genisoimage
qemu:
	@missing=; for t in $(QEMU_TOOLS); do PATH=$$PATH:/usr/sbin:/sbin command -v $$t >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		echo "installing QEMU and the guest image tools for the qemu provider"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(QEMU_PACKAGES); \
	fi

# The qemu provider's debian-12 guest image, built once per recipe (tools/qemu-image) from Debian's
# packages: about 500 MB and a minute or two. The provider builds it on first use too, the same way.
qemu-image: qemu .venv/.synced
	@.venv/bin/python -m providers.qemu debian-12 --image-dir .data/qemu/images

# ONEBOX_DEV_LOGIN=1: the dashboard's sign-in page offers a development button (embedded database only).
run: install $(if $(findstring qemu,$(ONEBOX_PROVIDERS)),qemu)
	ONEBOX_DEV_LOGIN=1 .venv/bin/onebox serve --port $(PORT)

# QA suites run the VM's own packages; on the local provider the "VM" is this machine, so the tests
# need iperf3, fio and sysbench here (a real VM gets them from the QA run's Ansible role).
qa-tools:
	@missing=""; for tool in iperf3 fio sysbench; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing for the QA suites' tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# Every test, in two parts: the suite in TEST_WORKERS pytest-xdist processes (most tests wait on
# processes, sockets and clouds, not on the CPU; a file's tests stay in one process, so its module
# fixtures are made once), then the vm tier (tests/vm: real VMs under QEMU from the image built here,
# which want the CPU to themselves). Both parts always run; either one failing fails `make test`.
TEST_WORKERS ?= 2
test: install browser qa-tools qemu-image
	status=0; \
	.venv/bin/pytest -n $(TEST_WORKERS) --dist loadfile --durations=25 --ignore=tests/vm || status=$$?; \
	.venv/bin/pytest tests/vm || status=$$?; \
	exit $$status

# Load generators for `make bench`: wrk (Debian) for the most a server answers, vegeta (pinned in
# tools/vegeta, built from the Go module proxy) for constant offered rates; ansible-playbook comes
# with the virtualenv. `make bench SCENARIO="list scale" QUICK=1` runs some scenarios, smaller.
bench-tools: .bin/vegeta
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }
.bin/vegeta: tools/vegeta/tools.go tools/vegeta/go.mod tools/vegeta/go.sum
	@command -v go >/dev/null || { echo "Go >= 1.22 is needed to build vegeta"; exit 1; }
	cd tools/vegeta && go build -trimpath -o ../../.bin/vegeta github.com/tsenart/vegeta/v12

bench: install bench-tools
	.venv/bin/python -m bench $(SCENARIO) $(if $(QUICK),--quick) $(if $(SCENARIO)$(QUICK),,--readme)

clean:
	rm -rf .venv .tools .bin .pytest_cache
