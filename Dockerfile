# syntax=docker/dockerfile:1
# An exact version: a rebuild gets the same interpreter and Debian base.
FROM python:3.11.11-slim-bookworm

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

# Pinned dependencies first (requirements.lock, compiled from pyproject.toml), so the layer
# is cached and every build installs the same versions; then the package itself, alone.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install --no-cache-dir --no-deps .

USER 10001:10001
VOLUME ["/data"]

# Asks /healthz when METRICS_PORT is set (gateway, database, image API); passes otherwise.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "bot", "healthcheck"]

CMD ["python", "-m", "bot"]
