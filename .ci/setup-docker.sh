#!/usr/bin/env bash
# Install what the container lab needs and make sure a Docker daemon answers.
#
# Idempotent: installs only missing Debian packages (one `apt-get update` first,
# only when something is missing), starts dockerd in the background only when no
# daemon answers, then waits up to 60 s for `docker info`. Safe without stdin
# (CI runs it as root on a fresh Debian 12 machine).
set -euo pipefail

WAIT_SECONDS="${TCPLAB_DOCKER_WAIT:-60}"
DOCKERD_LOG="${TCPLAB_DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKERD_PID=""

# Installed with --no-install-recommends: nothing more is needed from them.
# qemu-system-x86 (seabios, ipxe as dependencies), qemu-utils and kmod: the vm backend.
# iptables: the link conditions' delay line (its NFQUEUE rule; nftables' own queue is not
# built into every kernel).
PACKAGES_NO_RECOMMENDS=(debootstrap openssh-server openssh-client iproute2 procps nftables iptables
                        util-linux chromium
                        qemu-system-x86 qemu-utils kmod bpftrace)
# docker.io with its recommends (iptables, etc.) is what the daemon needs.
PACKAGES_WITH_RECOMMENDS=(docker.io)

die() { echo "setup-docker: ERROR: $*" >&2; exit 1; }
say() { echo "setup-docker: $*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages and starts dockerd)"

is_installed() {
    dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

missing_of() {
    local p out=()
    for p in "$@"; do is_installed "$p" || out+=("$p"); done
    echo "${out[@]+"${out[@]}"}"
}

install_missing() {
    local miss_plain miss_rec
    miss_plain=$(missing_of "${PACKAGES_NO_RECOMMENDS[@]}")
    miss_rec=$(missing_of "${PACKAGES_WITH_RECOMMENDS[@]}")
    if [ -z "$miss_plain" ] && [ -z "$miss_rec" ]; then
        say "all packages already installed"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    say "installing: $miss_rec $miss_plain"
    apt-get update -q </dev/null || die "apt-get update failed"
    if [ -n "$miss_rec" ]; then
        # shellcheck disable=SC2086
        apt-get install -y -q $miss_rec </dev/null || die "apt-get install $miss_rec failed"
    fi
    if [ -n "$miss_plain" ]; then
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $miss_plain </dev/null \
            || die "apt-get install $miss_plain failed"
    fi
}

daemon_answers() {
    timeout 10 docker info >/dev/null 2>&1
}

start_dockerd() {
    command -v dockerd >/dev/null || die "dockerd not found after install (package docker.io)"
    # A stale pid file from a daemon that died (or a machine that rebooted) would make
    # dockerd refuse to start. Stale unless that pid is a dockerd: after a reboot the
    # number may well belong to some other process.
    local pidfile=/var/run/docker.pid
    if [ -f "$pidfile" ] && [ "$(cat "/proc/$(cat "$pidfile")/comm" 2>/dev/null)" != dockerd ]; then
        say "removing stale $pidfile (pid $(cat "$pidfile") is not a dockerd)"
        rm -f "$pidfile"
    fi
    say "starting dockerd in the background (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    # setsid + nohup: detach from this shell and its (absent) terminal so the daemon
    # survives the end of the script.
    # --ip-forward=false: dockerd would otherwise turn net.ipv4.ip_forward (and with it
    # every interface's forwarding) on for the whole host when it starts. The lab's
    # networks are internal (no route out): containers on one bridge need no forwarding.
    setsid nohup dockerd --ip-forward=false >>"$DOCKERD_LOG" 2>&1 </dev/null &
    DOCKERD_PID=$!
}

show_log_tail() {
    echo "---- last lines of $DOCKERD_LOG ----" >&2
    tail -n 30 "$DOCKERD_LOG" >&2 || true
}

wait_for_daemon() {
    local waited=0
    until daemon_answers; do
        if [ -n "${DOCKERD_PID:-}" ] && ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            show_log_tail
            die "dockerd exited right after start; see $DOCKERD_LOG"
        fi
        if [ "$waited" -ge "$WAIT_SECONDS" ]; then
            show_log_tail
            die "docker daemon did not answer within ${WAIT_SECONDS} s; see $DOCKERD_LOG"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "docker daemon answers (server $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
}

install_missing
if daemon_answers; then
    say "a docker daemon already answers"
else
    start_dockerd
fi
wait_for_daemon
