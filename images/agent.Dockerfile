# The agent that runs inside backup, restore and drill Jobs, with the tools it drives at pinned
# versions (images/agent-tools.txt lists them; the build fails when one is missing): the
# PostgreSQL 15 client (pg_dump, pg_restore, pg_basebackup, pg_receivewal) and redis-tools 7.0
# (redis-cli, redis-check-rdb) from Debian 12. Nothing else: the agent speaks S3 itself.
# Non-root; the Jobs mount a read-only root.
# Build from the repository root:
#   docker build -f images/agent.Dockerfile -t ghcr.io/lifeboat-dev/lifeboat-agent:0.1.0 .
# Without a container engine, hack/ (the local-node issue) assembles the same layers as an OCI
# image by hand.
# Base images by tag unless the build pins them by digest (images/README.md, "Pinned bases").
ARG BUILD_IMAGE=docker.io/library/rust:1.95-bookworm
ARG BASE_IMAGE=docker.io/library/debian:12-slim
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lifeboat-agent \
 && install -D target/release/lifeboat-agent /out/lifeboat-agent

FROM ${BASE_IMAGE}
ARG PG_CLIENT_VERSION=15.18-0+deb12u1
ARG REDIS_TOOLS_VERSION=5:7.0.15-1~deb12u10
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      "postgresql-client-15=${PG_CLIENT_VERSION}" \
      "redis-tools=${REDIS_TOOLS_VERSION}" \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV LIFEBOAT_PG_BIN=/usr/lib/postgresql/15/bin
COPY images/agent-tools.txt /usr/local/share/lifeboat/agent-tools.txt
RUN grep -v '^#' /usr/local/share/lifeboat/agent-tools.txt | while read -r tool; do \
      [ -x "$LIFEBOAT_PG_BIN/$tool" ] || command -v "$tool" >/dev/null \
        || { echo "agent image: $tool missing" >&2; exit 1; }; \
    done
COPY --from=build /out/lifeboat-agent /usr/local/bin/lifeboat-agent
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/lifeboat-agent"]
