# The operator: one static-ish Rust binary on distroless, non-root.
# Build from the repository root:
#   docker build -f images/operator.Dockerfile -t ghcr.io/lifeboat-dev/lifeboat-operator:0.1.0 .
# Base images by tag unless the build pins them by digest (images/README.md, "Pinned bases").
ARG BUILD_IMAGE=docker.io/library/rust:1.95-bookworm
ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lifeboat-operator \
 && install -D target/release/lifeboat-operator /out/lifeboat-operator

FROM ${BASE_IMAGE}
COPY --from=build /out/lifeboat-operator /usr/local/bin/lifeboat-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/lifeboat-operator"]
