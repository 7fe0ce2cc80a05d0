FROM python:3.12 AS builder
RUN apt-get update && apt-get install -y gcc
RUN pip install --prefix=/install flask

FROM python:3.12-slim AS runtime
ENV PIP_NO_CACHE_DIR=1
COPY --from=builder /install /usr/local
RUN pip install gunicorn && python -m pip install uvicorn
CMD ["gunicorn", "app:app"]

FROM runtime
RUN pip3 install requests
