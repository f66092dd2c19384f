# The bikesense image: every bikesense service of docker-compose.yml runs it with its own
# command (`bikesense <command>`). See docs/deployment.md.

# The map page's JavaScript (MapLibre GL, pinned in api/web/package-lock.json).
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY api/web/package.json api/web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bikesense bikesense
COPY firmware_protocol firmware_protocol
COPY ingest ingest
COPY stream stream
COPY storage storage
COPY api api
COPY simulators simulators
COPY --from=web /web/node_modules api/web/node_modules
# Editable: the API serves api/web (page, scripts, node_modules) from this tree.
RUN pip install --no-cache-dir -e .
# Not root. The faust workers keep their local table data under the state folder
# (tables are rebuilt from Kafka changelog topics, so it need not persist).
ENV BIKESENSE_STATE_DIR=/tmp/bikesense PYTHONUNBUFFERED=1
USER nobody
ENTRYPOINT ["bikesense"]
CMD ["--help"]
