#!/usr/bin/env bash
# install-tools.sh — make the test command's other tools available:
#   promtool (Debian package prometheus): the unit tests of the alert rules;
#   chromium (Debian package chromium): the live page's test in a headless
#   browser.
#
# Idempotent: a tool already on PATH is left alone. Installs from Debian's
# packages without their recommendations (no node exporter). The prometheus
# package may start its system service; if this script's install started
# it, the script stops that one service again (only it). Exits non-zero
# with a message on any failure.
set -euo pipefail

log() { printf 'install-tools: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
	log "promtool and chromium already on PATH ($(promtool --version 2>&1 | head -n1); $(chromium --version 2>/dev/null | head -n1))"
	exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and apt-get not available; install promtool and chromium by hand"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "must run as root (or have sudo) to install ${missing[*]}"
	SUDO="sudo"
fi
was_running=no
if command -v service >/dev/null 2>&1 && $SUDO service prometheus status >/dev/null 2>&1; then
	was_running=yes
fi

log "installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || die "apt-get update failed"
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"

if [ "$was_running" = no ] && command -v service >/dev/null 2>&1; then
	if $SUDO service prometheus status >/dev/null 2>&1; then
		log "stopping the prometheus system service started by the package install"
		$SUDO service prometheus stop >/dev/null 2>&1 || true
	fi
fi

hash -r
command -v promtool >/dev/null 2>&1 || die "install finished but promtool still not on PATH"
command -v chromium >/dev/null 2>&1 || die "install finished but chromium still not on PATH"
log "installed: $(promtool --version 2>&1 | head -n1); $(chromium --version 2>/dev/null | head -n1)"
