#!/usr/bin/env bash
# Make sure PostgreSQL's server programs (initdb, pg_ctl, postgres) are on this machine.
# As root on Debian/Ubuntu it installs them with apt-get; otherwise it says how to.
set -euo pipefail

have_server() {
  [ -n "${ABACO_PG_BINDIR:-}" ] && [ -x "$ABACO_PG_BINDIR/initdb" ] && return 0
  command -v initdb >/dev/null 2>&1 && return 0
  if command -v pg_config >/dev/null 2>&1; then
    [ -x "$(pg_config --bindir)/initdb" ] && return 0
  fi
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
  return 1
}

if have_server; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL's server programs are missing; installing them with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends postgresql
  exit 0
fi
echo "PostgreSQL's server programs are missing: install them (sudo apt-get install postgresql," \
  "or brew install postgresql@15) or set ABACO_PG_BINDIR to their folder." >&2
exit 1
