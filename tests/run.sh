#!/usr/bin/env bash
# The test command: on a fresh machine it installs what the tests need (Pebble, its DNS server,
# unbound, nsd, dnsperf and dig for the delegation tests, wrk, Caddy, nginx and HAProxy for the
# edge tests, PostgreSQL where none runs,
# Chromium and ChromeDriver for the console; schemathesis, the standardwebhooks verifier and
# Selenium from PyPI; axe-core from npm), starts PostgreSQL when it is down,
# checks formatting and clippy, and runs every test of the workspace: the Pebble end-to-end
# tests, the schemathesis conformance run and the quick-start script included.
#
#   ./tests/run.sh            # everything
#   ./tests/run.sh <filter>   # passes extra arguments to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || missing+=(pebble)
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
command -v wrk >/dev/null || missing+=(wrk)
# Debian puts unbound and nsd in /usr/sbin, which a non-root PATH may lack.
command -v unbound >/dev/null || [ -x /usr/sbin/unbound ] || missing+=(unbound)
command -v nsd >/dev/null || [ -x /usr/sbin/nsd ] || missing+=(nsd)
# The dns bench's smoke run loads the delegation zone's server with dnsperf, beside NSD.
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v dig >/dev/null || missing+=(bind9-dnsutils)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
# The edge tests' TLS terminators, run on loopback from docs/edge/'s configurations; nginx and
# HAProxy are in /usr/sbin too.
command -v caddy >/dev/null || missing+=(caddy)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
# The console's browser test: Debian's Chromium, driven through its ChromeDriver by Selenium;
# npm installs axe-core for its accessibility check.
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v npm >/dev/null || missing+=(npm)
# The packaging tests: the image (mmdebstrap makes its base root, buildah builds it, podman runs
# it with runc), the unit (systemd-analyze, from systemd) and the Debian package (lintian).
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v buildah >/dev/null || missing+=(buildah)
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v lintian >/dev/null || missing+=(lintian)
if [ -z "${TEST_POSTGRES_URL:-}" ] && ! command -v pg_ctlcluster >/dev/null; then
  missing+=(postgresql)
  installed_postgres=1
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}"
  # unbound's, nsd's, Caddy's, nginx's, HAProxy's and PostgreSQL's packages start their system
  # daemons on install; the tests start their own on free ports (and PostgreSQL below). Where no
  # policy-rc.d is in place (a container image usually has one), one denies those starts for the
  # install, so that a daemon failing to start (port 53 or 80 taken, no init system) cannot fail
  # the install.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    added_policy_rc_d=1
  fi
  installed=0
  as_root apt-get update -qq \
    && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || installed=$?
  if [ -n "${added_policy_rc_d:-}" ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
  if [ "$installed" -ne 0 ]; then
    echo "tests/run.sh: installing ${missing[*]} failed" >&2
    exit "$installed"
  fi
fi

if [ -z "${TEST_POSTGRES_URL:-}" ]; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "tests/run.sh: starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
    for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  fi
  if [ -n "${installed_postgres:-}" ]; then
    # A fresh Debian PostgreSQL asks TCP clients for a password: give the tests one.
    as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
  fi
  # With trust authentication (as on the development machines) the password is simply ignored.
  export TEST_POSTGRES_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
fi

# The Python test tools, from PyPI, in one virtual environment under target/schemathesis:
# schemathesis, which checks the running service against its OpenAPI description, and
# standardwebhooks, the reference verifier the webhook tests' receiver (tests/webhook_receiver.py,
# run with this environment's python) checks every delivery's signatures with, selenium, and
# duckdb for the analytics test's queries. It is installed
# once per checkout with every package pinned (tests/schemathesis-requirements.txt), and again
# whenever that list changes or a tool in it is missing.
SCHEMATHESIS_REQUIREMENTS=tests/schemathesis-requirements.txt
if ! cmp -s "$SCHEMATHESIS_REQUIREMENTS" target/schemathesis/requirements.txt \
  || ! target/schemathesis/bin/schemathesis --version >/dev/null 2>&1 \
  || ! target/schemathesis/bin/python -c 'import standardwebhooks, selenium, duckdb' >/dev/null 2>&1; then
  echo "tests/run.sh: installing schemathesis, standardwebhooks, selenium and duckdb ($SCHEMATHESIS_REQUIREMENTS)"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf target/schemathesis
  python3 -m venv target/schemathesis
  target/schemathesis/bin/pip install --quiet --disable-pip-version-check \
    -r "$SCHEMATHESIS_REQUIREMENTS"
  cp "$SCHEMATHESIS_REQUIREMENTS" target/schemathesis/requirements.txt
fi
# axe-core, for the console's browser test only, pinned with its integrity hash in
# tests/console/package-lock.json; installed again whenever that lock changes.
CONSOLE_NPM=target/console-npm
if ! cmp -s tests/console/package-lock.json "$CONSOLE_NPM/package-lock.json" \
  || [ ! -f "$CONSOLE_NPM/node_modules/axe-core/axe.min.js" ]; then
  echo "tests/run.sh: installing axe-core (tests/console/package-lock.json)"
  rm -rf "$CONSOLE_NPM"
  mkdir -p "$CONSOLE_NPM"
  cp tests/console/package.json tests/console/package-lock.json "$CONSOLE_NPM/"
  (cd "$CONSOLE_NPM" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
export AXE_CORE_JS="$PWD/$CONSOLE_NPM/node_modules/axe-core/axe.min.js"

# cargo-deb, which the Debian package test makes the package with, from crates.io.
CARGO_DEB_VERSION=3.6.2
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "tests/run.sh: installing cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

# The tests find the environment through this (the webhook receiver takes its python from the
# same bin/ directory).
export SCHEMATHESIS="$PWD/target/schemathesis/bin/schemathesis"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The release binary, built once as the README's run command builds it (the binary alone, without
# the tests' dependencies): the quick-start test runs it.
cargo build --release --locked --bin dns-handling
export DNS_HANDLING_RELEASE_BIN="$PWD/target/release/dns-handling"
cargo test --workspace --all-targets --locked "$@"
