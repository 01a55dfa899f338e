#!/usr/bin/env bash
# install-redis.sh — make redis-server and redis-cli available for the tests.
#
# The test helper package internal/redistest starts real redis-server
# processes (standalone, replicated, sentinel and cluster topologies) and uses
# redis-cli to create clusters. This script installs both from Debian's
# packages when they are missing.
#
# Properties:
#   * Idempotent: if redis-server and redis-cli are already on PATH it does
#     nothing and exits 0.
#   * Needs root (apt-get) only when something has to be installed.
#   * The Debian package starts a system redis-server service on port 6379.
#     Tests never use it (they pick free ports), so if this script's install
#     started it, the script stops that one service again. A redis-server that
#     was already running before the install is left alone.
#   * Exits non-zero with a message on stderr on any failure.
set -euo pipefail

log() { printf 'install-redis: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

have_redis() {
	command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1
}

if have_redis; then
	log "redis-server and redis-cli already on PATH ($(redis-server --version | head -n1))"
	exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "redis-server/redis-cli missing and apt-get not available; install Redis >= 7 by hand"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "must run as root (or have sudo) to install redis-server"
	SUDO="sudo"
fi

# Was a redis-server service already running before we installed anything?
# (Only possible if the binary existed outside PATH; be conservative.)
service_was_running=no
if command -v service >/dev/null 2>&1 && $SUDO service redis-server status >/dev/null 2>&1; then
	service_was_running=yes
fi

log "installing redis-server and redis-tools with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || die "apt-get update failed"
$SUDO apt-get install -y -qq redis-server redis-tools >/dev/null || die "apt-get install redis-server redis-tools failed"

# The package's postinst may have started the system service on :6379.
# Stop it (only that service, and only if it was not running before).
if [ "$service_was_running" = no ] && command -v service >/dev/null 2>&1; then
	if $SUDO service redis-server status >/dev/null 2>&1; then
		log "stopping the redis-server system service started by the package install"
		$SUDO service redis-server stop >/dev/null 2>&1 || true
	fi
fi

hash -r
have_redis || die "install finished but redis-server/redis-cli still not on PATH"
log "installed: $(redis-server --version | head -n1)"
