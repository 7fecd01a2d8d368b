# The odsflow binary with its pipelines (config/), for docker-compose.yml.
# Not built by CI (no Docker engine there): `docker compose build` builds it.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# VERSION: e.g. `docker compose build --build-arg VERSION=$(git describe --tags --always)`.
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-X main.version=${VERSION} -X main.dateBuilt=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
      -o /out/odsflow ./cmd/odsflow

FROM debian:bookworm-slim
# CA certificates: TLS to a managed Kafka or an https schema registry.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app odsflow && mkdir -p /data && chown odsflow /data
WORKDIR /app
COPY --from=build /out/odsflow /usr/local/bin/odsflow
COPY config /app/config
USER odsflow
ENTRYPOINT ["odsflow"]
CMD ["run", "config/ods.yaml"]
