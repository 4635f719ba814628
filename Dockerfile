# syntax=docker/dockerfile:1
# The Plinth image: `plinth` (the operator and CLI) and `plinth-agent` (the eBPF node agent), as the Helm chart
# in charts/plinth runs them. The operator runs as the image's non-root user; the chart runs the agent as root
# with only CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON.
#
#   docker build -t ghcr.io/plinth-dev/plinth:0.1.0 .

ARG RUST_VERSION=1.89

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
# clang and libbpf headers compile the BPF datapath (policies/build.rs).
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang llvm libbpf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p plinth-operator --bin plinth \
    && cargo build --release --locked -p plinth-policies --bin plinth-agent \
    && install -D -m 0755 target/release/plinth target/release/plinth-agent -t /out/

# glibc and libgcc only, no shell, no package manager; uid 65532 by default.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/plinth-dev/plinth" \
      org.opencontainers.image.description="Plinth operator and eBPF NetworkPolicy agent" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/plinth /out/plinth-agent /usr/local/bin/
# `plinth` allocates with mimalloc; a long-running operator returns freed memory at once and commits arena
# memory as it is used (peak RSS at 10,000 Applications: 136 MiB instead of 150; BENCHMARKS.md).
ENV MIMALLOC_PURGE_DELAY=0 \
    MIMALLOC_ARENA_EAGER_COMMIT=0
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/plinth"]
CMD ["operator"]
