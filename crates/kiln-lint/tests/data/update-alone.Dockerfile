FROM ubuntu:22.04
RUN apt-get update
RUN apt-get install -y --no-install-recommends curl && apt-get clean
RUN rm -rf /var/lib/apt/lists/* /var/cache/apt/archives
CMD ["bash"]
