FROM debian:bookworm
RUN if [ "$(uname -m)" = "x86_64" ]; then \
        apt-get update && apt-get install -y --no-install-recommends libc6-i386; \
    fi \
 && rm -rf /var/lib/apt/lists/*
RUN sudo -E apt-get install -y --no-install-recommends make 2>&1 | tee /tmp/log
CMD ["make"]
