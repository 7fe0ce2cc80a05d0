# syntax=docker/dockerfile:1
ARG PY=3.12
FROM python:${PY}-slim AS base
COPY packages.txt /tmp/packages.txt
RUN apt-get update \
 && xargs -r apt-get install -y --no-install-recommends < /tmp/packages.txt \
 && rm -rf /var/lib/apt/lists/*
RUN <<EOF
#!/usr/bin/env bash
set -euo pipefail
timeout 300 pip install --no-cache-dir -r /tmp/requirements.txt
EOF

FROM base
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
 && apt-get update && apt-get -y install --no-install-recommends curl
USER nobody
ENTRYPOINT ["python3"]
