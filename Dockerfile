# syntax=docker/dockerfile:1
# Multi-stage: build the embedded database and the virtualenv, then a slim non-root runtime.
# The runtime carries a headless JRE so that `docker run` alone works on the embedded database; with
# ONEBOX_MONGODB_URL set (the compose file) the JRE is simply unused.

FROM maven:3.9-eclipse-temurin-17 AS database
WORKDIR /src
COPY tools/mongo-server/ ./
RUN mvn -q -B -DskipTests package && mkdir -p /out && cp -r target/lib target/onebox-db.jar /out/

FROM python:3.11-slim-bookworm AS build
RUN pip install --no-cache-dir uv==0.9.30
WORKDIR /app
ENV UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app/ app/
COPY providers/ providers/
RUN uv sync --frozen --no-dev

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client openssh-server openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 onebox
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/app /app/app
COPY --from=build /app/providers /app/providers
COPY --from=database /out/ /app/.bin/mongo-server/
COPY playbooks/ /app/playbooks/
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 ONEBOX_DATA_DIR=/data
RUN mkdir -p /data && chown onebox:onebox /data
USER onebox
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["onebox", "serve", "--host", "0.0.0.0", "--port", "8000"]
