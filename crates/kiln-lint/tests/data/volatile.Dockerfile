FROM node
WORKDIR /src
COPY . .
RUN npm ci
ADD config.json /etc/app/
ADD rootfs.tar.gz /
RUN cd /src && npm run build
CMD npm start
