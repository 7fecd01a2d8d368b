# The odsflow binary with its pipelines (config/), for docker-compose.yml.
# Not built by CI (no Docker engine there): `docker compose build` builds it.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/odsflow ./cmd/odsflow

FROM debian:bookworm-slim
RUN useradd --system --home /app odsflow && mkdir -p /data && chown odsflow /data
WORKDIR /app
COPY --from=build /out/odsflow /usr/local/bin/odsflow
COPY config /app/config
USER odsflow
ENTRYPOINT ["odsflow"]
CMD ["run", "config/ods.yaml"]
