# syntax=docker/dockerfile:1
FROM debian:bookworm
RUN --mount=type=cache,target=/var/lib/apt \
    --mount=type=cache,target=/var/cache/apt \
    apt-get update && apt-get install -y --no-install-recommends python3-pip
RUN --mount=type=cache,target=/root/.cache/pip pip install --break-system-packages flask
CMD ["python3"]
