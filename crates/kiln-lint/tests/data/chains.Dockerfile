FROM debian:bookworm
RUN set -e; \
    apt-get update -qq || true; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends \
        build-essential \
        libpq-dev \
    ; rm -rf "/var/lib/apt/lists/"*
RUN apt-get -y upgrade
ENTRYPOINT /usr/local/bin/start.sh --port 80
