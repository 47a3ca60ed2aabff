# syntax=docker/dockerfile:1
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_PATH=/data/usage.db

WORKDIR /app

RUN groupadd --system --gid 10001 bot \
    && useradd --system --uid 10001 --gid bot --home-dir /app --no-create-home bot \
    && mkdir -p /data \
    && chown bot:bot /data

# Dependencies come from pyproject.toml; the package is copied first so the layer is cached.
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install --no-cache-dir .

USER 10001:10001
VOLUME ["/data"]

# Asks /healthz when METRICS_PORT is set (gateway, database, image API); passes otherwise.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "bot", "healthcheck"]

CMD ["python", "-m", "bot"]
