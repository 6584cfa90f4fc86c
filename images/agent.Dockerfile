# The agent that runs inside backup, restore and drill Jobs, with the tools it drives at pinned
# versions (images/agent-tools.txt lists them; the build fails when one is missing): the
# PostgreSQL clients 14 to 18 (pg_dump, pg_restore, pg_basebackup, pg_receivewal) from the
# PostgreSQL project's apt repository, and redis-tools 7.0 (redis-cli, redis-check-rdb) from
# Debian 12. Nothing else: the agent speaks S3 itself.
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
# One PostgreSQL client per supported major, from the PostgreSQL project's own repository (Debian
# 12 has 15 only): the agent runs the one of the server's major (tools::find_pg), because a newer
# pg_dump reads older servers but its pg_restore sends settings they reject (images/README.md).
ARG PG_MAJORS="14 15 16 17 18"
ARG REDIS_TOOLS_VERSION=5:7.0.15-1~deb12u10
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSLo /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
      https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      $(for v in ${PG_MAJORS}; do echo "postgresql-client-$v"; done) \
      "redis-tools=${REDIS_TOOLS_VERSION}" \
 && apt-get purge -y curl && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*
COPY images/agent-tools.txt /usr/local/share/lifeboat/agent-tools.txt
# Each listed program: in every major's bin directory (PostgreSQL's), or on PATH (the others).
RUN majors=$(echo ${PG_MAJORS} | wc -w); \
    grep -v '^#' /usr/local/share/lifeboat/agent-tools.txt | while read -r tool; do \
      found=0; \
      for v in ${PG_MAJORS}; do \
        [ -x "/usr/lib/postgresql/$v/bin/$tool" ] && found=$((found + 1)); \
      done; \
      [ "$found" = "$majors" ] || { [ "$found" = 0 ] && command -v "$tool" >/dev/null; } \
        || { echo "agent image: $tool missing" >&2; exit 1; }; \
    done
COPY --from=build /out/lifeboat-agent /usr/local/bin/lifeboat-agent
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/lifeboat-agent"]
