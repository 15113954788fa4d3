#!/usr/bin/env bash
# Installs the engine's test services: redis-server and rabbitmq-server from Debian packages and
# FerretDB (built by hack/build-tools.sh). The tests start their own instances on free loopback
# ports (tests/brokers), so the Debian system services are stopped and disabled after install.
# Idempotent: a second run only checks and exits.
#
#   hack/install-services.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PACKAGES=(redis-server rabbitmq-server)
SERVICES=(redis-server rabbitmq-server)
POLICY=/usr/sbin/policy-rc.d

log() { printf '[install-services %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do installed "$p" || echo "$p"; done
}

# Debian's postinst starts each daemon on its default port; policy-rc.d answering 101 ("action
# forbidden") keeps invoke-rc.d from starting them at all during the install.
install_packages() {
  local missing; mapfile -t missing < <(missing_packages)
  if [[ ${#missing[@]} -eq 0 ]]; then log "packages: ${PACKAGES[*]} already installed"; return; fi
  [[ $EUID -eq 0 ]] || die "installing ${missing[*]} needs root (apt-get)"
  local start=$SECONDS own_policy=0
  if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"; chmod 0755 "$POLICY"; own_policy=1
  fi
  # shellcheck disable=SC2064  # expand now: the trap must remove the file this run created
  if [[ $own_policy == 1 ]]; then trap "rm -f '$POLICY'" EXIT; fi
  log "packages: apt-get update"
  apt-get update -qq
  log "packages: installing ${missing[*]} (cold: about a minute, erlang comes with rabbitmq)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null
  if [[ $own_policy == 1 ]]; then rm -f "$POLICY"; fi
  trap - EXIT
  log "packages: installed in $((SECONDS - start)) s"
  disable_system_services
}

# Run right after a fresh install only: a system instance someone started on purpose later is
# left alone. The tests never use the default ports (6379/5672), so an instance there cannot
# answer in place of theirs; the check below only names it.
disable_system_services() {
  local s
  for s in "${SERVICES[@]}"; do
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
      systemctl disable --now "$s" >/dev/null 2>&1 || true
    else
      if [[ -x /etc/init.d/$s ]]; then /etc/init.d/"$s" stop >/dev/null 2>&1 || true; fi
      if command -v update-rc.d >/dev/null; then update-rc.d "$s" disable >/dev/null 2>&1 || true; fi
    fi
  done
  log "packages: system services ${SERVICES[*]} stopped and disabled"
}

report_default_ports() {
  local port
  for port in 6379 5672; do
    if [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]; then
      log "note: something listens on the default port $port (not used by the tests)"
    fi
  done
}

install_packages
report_default_ports
command -v redis-server >/dev/null || die "redis-server not on PATH after install"
[[ -x /usr/sbin/rabbitmq-server ]] || die "rabbitmq-server missing after install"
"$HERE/build-tools.sh" ferretdb
log "done: redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'), rabbitmq-server, ferretdb"
