# The bikesense image used by docker-compose.yml for every bikesense service.
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bikesense bikesense
COPY firmware_protocol firmware_protocol
COPY ingest ingest
COPY stream stream
COPY storage storage
COPY api api
COPY simulators simulators
RUN pip install --no-cache-dir . \
    && if [ -f api/web/package-lock.json ]; then npm ci --prefix api/web --omit=dev; fi
USER nobody
ENTRYPOINT ["bikesense"]
