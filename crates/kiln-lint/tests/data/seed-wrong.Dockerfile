# The seed's wrong practice ("这是一个错误的做法"): the clean-up in a RUN of its own.
FROM debian:bookworm

# 道客船长荣誉出品
MAINTAINER Captain Dao <support@daocloud.io>

RUN apt-get update && \
  	apt-get install -y python3 \
    				   python3-dev \
                       python3-pip
RUN rm -rf /var/lib/apt/lists/*

# 配置默认放置 App 的目录
RUN mkdir -p /app
WORKDIR /app
EXPOSE 80
CMD ["bash"]
