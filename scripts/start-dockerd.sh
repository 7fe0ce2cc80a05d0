#!/usr/bin/env bash
# Starts dockerd in the background unless one already answers, and waits for its socket.
set -euo pipefail
sock=/var/run/docker.sock
if [ -S "$sock" ] && /usr/bin/docker version >/dev/null 2>&1; then
  exit 0
fi
mkdir -p /var/log
nohup /usr/sbin/dockerd --host="unix://$sock" >/var/log/kiln-dockerd.log 2>&1 &
# Wait on the socket answering, bounded: 60 s.
for _ in $(seq 1 600); do
  if [ -S "$sock" ] && /usr/bin/docker version >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.1
done
echo "dockerd did not come up; its log:" >&2
tail -50 /var/log/kiln-dockerd.log >&2
exit 1
