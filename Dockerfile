# syntax=docker/dockerfile:1
# The annexmesh image: one binary for every role, chosen by the command
# (`coordinator`, `agent`, `gateway`, `admin`, ...).
#
#   docker build --build-arg ANNEXMESH_COMMIT=$(git rev-parse --short=12 HEAD) -t annexmesh .
#   docker run --rm annexmesh --version
#
# deploy/compose/ runs a three-host mesh from it, deploy/k8s/ the same on
# Kubernetes; docs/deployment.md has the ports and the join flow.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# The commit `--version` reports: the build context has no .git, so build.rs
# takes it from here.
ARG ANNEXMESH_COMMIT=unknown
ENV ANNEXMESH_COMMIT=${ANNEXMESH_COMMIT}
WORKDIR /src
COPY . .
# protoc comes from a vendored crate; nothing else is needed from the system.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin annexmesh \
    && install -D -m 0755 target/release/annexmesh /out/annexmesh

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# git: the coordinator serves the clusters' git repositories; ca-certificates:
# PostgreSQL over TLS and OTLP export; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed UID/GID, so volumes keep their owner across images and hosts.
ARG ANNEXMESH_UID=10001
RUN groupadd --system --gid ${ANNEXMESH_UID} annexmesh \
    && useradd --system --uid ${ANNEXMESH_UID} --gid annexmesh \
       --home-dir /var/lib/annexmesh --shell /usr/sbin/nologin annexmesh \
    && install -d -o annexmesh -g annexmesh -m 0750 /var/lib/annexmesh
COPY --from=builder /out/annexmesh /usr/local/bin/annexmesh
COPY deploy/docker/healthcheck.sh /usr/local/bin/annexmesh-healthcheck
# The names git-annex runs for p2p-annex::annexmesh: remotes and ssh.
RUN annexmesh install-links /usr/local/bin
USER annexmesh:annexmesh
ENV HOME=/var/lib/annexmesh
WORKDIR /var/lib/annexmesh
VOLUME ["/var/lib/annexmesh"]
# coordinator gRPC + admin API, agent gRPC, gateway P2P over HTTP, gateway
# line protocol, coordinator metrics.
EXPOSE 7400 7500 9417 9418 9400
# Liveness by role: the gateway's /health, a TCP connect for the others
# (their gRPC ports need a mesh client certificate).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/annexmesh-healthcheck"]
ENTRYPOINT ["annexmesh"]
CMD ["--help"]
