FROM debian:bookworm-slim
RUN ["/bin/sh", "-c", "apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*"]
RUN bash -euxo pipefail -c 'apt-get update; apt-get -o Dpkg::Options::=--force-confnew install -y vim'
CMD ["git", "--version"]
