# The agent that runs inside backup, restore and drill Jobs, with the tools it drives at pinned
# versions: PostgreSQL 15 client (pg_dump/pg_restore/psql), redis-tools 7.0 (redis-cli,
# redis-check-rdb) from Debian 12, and rclone. Non-root; the Jobs mount a read-only root.
# Build from the repository root:
#   docker build -f images/agent.Dockerfile -t ghcr.io/lifeboat-dev/lifeboat-agent:0.1.0 .
# Without a container engine, hack/ (the local-node issue) assembles the same layers as an OCI
# image by hand.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lifeboat-agent \
 && install -D target/release/lifeboat-agent /out/lifeboat-agent

FROM docker.io/library/debian:12-slim
ARG PG_CLIENT_VERSION=15.18-0+deb12u1
ARG REDIS_TOOLS_VERSION=5:7.0.15-1~deb12u10
ARG RCLONE_VERSION=1.75.2
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      "postgresql-client-15=${PG_CLIENT_VERSION}" \
      "redis-tools=${REDIS_TOOLS_VERSION}" \
      ca-certificates curl unzip \
 && curl -fsSLo /tmp/rclone.zip "https://downloads.rclone.org/v${RCLONE_VERSION}/rclone-v${RCLONE_VERSION}-linux-amd64.zip" \
 && unzip -j /tmp/rclone.zip "*/rclone" -d /usr/local/bin \
 && apt-get purge -y curl unzip && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* /tmp/rclone.zip
COPY --from=build /out/lifeboat-agent /usr/local/bin/lifeboat-agent
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/lifeboat-agent"]
