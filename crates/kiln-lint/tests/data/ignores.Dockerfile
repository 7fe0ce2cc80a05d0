# kiln-ignore-file=KL011
FROM debian
# kiln-ignore=KL003,apt-lists-not-cleaned,late-cleanup
RUN apt-get update && apt-get install -y curl
RUN apt-get update && \
    # kiln-ignore=KL003
    apt-get install -y wget && rm -rf /var/lib/apt/lists/*
CMD ["bash"]
