ARG GITHUB_TOKEN
FROM alpine:3.20
ARG DB_PASSWORD=changeme
ENV AWS_SECRET_ACCESS_KEY=abc \
    API_KEY=xyz \
    PASSWORD_FILE=/run/secrets/db \
    AWS_ACCESS_KEY_ID=AKIA
ENV APP_PRIVATE_KEY="-----BEGIN"
RUN apk update && apk add python3
RUN apk add --no-cache curl
CMD ["sh"]
