# syntax=docker/dockerfile:1
FROM ubuntu:24.04
RUN <<EOF
set -eux
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get -y -q install --no-install-recommends curl ca-certificates
EOF
RUN <<EOF
set -e
apt-get clean
rm -rf /var/lib/apt/lists/*
EOF
CMD ["curl", "--version"]
