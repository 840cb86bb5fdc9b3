#!/bin/sh
# Entrypoint of a tcplab lab node: install the authorized key, make a host key,
# then become sshd (PID 1). sshd reaps every child it is handed, orphans included,
# so no separate init is needed.
#
# Environment:
#   TCPLAB_AUTHORIZED_KEY   one SSH public key line (required)
#   TCPLAB_LISTEN_ADDRESS   the only address sshd listens on, port 22 (required)
set -eu

die() { echo "tcplab-entrypoint: $*" >&2; exit 1; }

[ -n "${TCPLAB_AUTHORIZED_KEY:-}" ] || die "TCPLAB_AUTHORIZED_KEY is empty: pass an SSH public key"
[ -n "${TCPLAB_LISTEN_ADDRESS:-}" ] || die "TCPLAB_LISTEN_ADDRESS is empty: pass this node's lab address"

umask 077
mkdir -p /root/.ssh
printf '%s\n' "$TCPLAB_AUTHORIZED_KEY" > /root/.ssh/authorized_keys
chmod 0700 /root/.ssh
chmod 0600 /root/.ssh/authorized_keys

if [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then
    ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
fi
umask 022
mkdir -p /run/sshd

# The address may be attached a moment after start (network connected late):
# wait up to 10 s for it rather than let sshd fail to bind.
i=0
until ip -o addr show | grep -qF " ${TCPLAB_LISTEN_ADDRESS}/"; do
    i=$((i + 1))
    [ "$i" -le 100 ] || die "address ${TCPLAB_LISTEN_ADDRESS} is not on any interface after 10 s"
    sleep 0.1
done

exec /usr/sbin/sshd -D -e -o "ListenAddress=${TCPLAB_LISTEN_ADDRESS}"
