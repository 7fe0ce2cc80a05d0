FROM python:3.12-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
RUN python3 -m pip install --upgrade pip setuptools
RUN PIP_NO_CACHE_DIR=1 pip install flask && pip install --no-cache-dir gunicorn
RUN rm -rf /root/.cache/pip
COPY . .
CMD ["python3", "app.py"]
