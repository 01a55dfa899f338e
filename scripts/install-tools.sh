#!/usr/bin/env bash
# install-tools.sh — make the test command's other tools available:
#   promtool (Debian package prometheus): the unit tests of the alert rules;
#   chromium (Debian package chromium): the live page's test in a headless
#   browser;
#   nginx and caddy (Debian packages): the configs of deploy/ tested in front
#   of a backend.
#
# Idempotent: a tool already on PATH is left alone. Installs from Debian's
# packages without their recommendations (no node exporter). The packages
# may start their system services (prometheus, nginx, caddy); the ones this
# script's install started, it stops again (only those). Exits non-zero
# with a message on any failure.
set -euo pipefail

log() { printf 'install-tools: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v caddy >/dev/null 2>&1 || missing+=(caddy)

if [ ${#missing[@]} -eq 0 ]; then
	log "promtool, chromium, nginx and caddy already installed ($(promtool --version 2>&1 | head -n1); $(chromium --version 2>/dev/null | head -n1))"
	exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and apt-get not available; install them by hand"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "must run as root (or have sudo) to install ${missing[*]}"
	SUDO="sudo"
fi
services=(prometheus nginx caddy)
declare -A was_running
for svc in "${services[@]}"; do
	was_running[$svc]=no
	if command -v service >/dev/null 2>&1 && $SUDO service "$svc" status >/dev/null 2>&1; then
		was_running[$svc]=yes
	fi
done

log "installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || die "apt-get update failed"
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"

if command -v service >/dev/null 2>&1; then
	for svc in "${services[@]}"; do
		if [ "${was_running[$svc]}" = no ] && $SUDO service "$svc" status >/dev/null 2>&1; then
			log "stopping the $svc system service started by the package install"
			$SUDO service "$svc" stop >/dev/null 2>&1 || true
		fi
	done
fi

hash -r
command -v promtool >/dev/null 2>&1 || die "install finished but promtool still not on PATH"
command -v chromium >/dev/null 2>&1 || die "install finished but chromium still not on PATH"
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || die "install finished but nginx still not installed"
command -v caddy >/dev/null 2>&1 || die "install finished but caddy still not on PATH"
log "installed: $(promtool --version 2>&1 | head -n1); $(chromium --version 2>/dev/null | head -n1)"
