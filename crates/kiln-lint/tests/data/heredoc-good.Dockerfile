# syntax=docker/dockerfile:1
FROM ubuntu:24.04
RUN <<EOF
set -eux
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends curl
rm -rf /var/lib/apt/lists/*
EOF
CMD ["curl", "--version"]
