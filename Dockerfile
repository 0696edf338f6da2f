# syntax=docker/dockerfile:1
# The cairn image: a Rust build stage, then a slim runtime with the binary,
# CA roots (for S3, GCS and Azure over TLS) and an unprivileged user.
#   docker build -t cairn:0.1.0 .
# The build stage's steps are deploy/docker/build.sh, which
# scripts/build-image.sh also runs on a machine without a container engine.

FROM rust:1.95-bookworm AS build
# RocksDB's bindings are generated with libclang.
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    deploy/docker/build.sh /out

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/cairn --create-home cairn \
 && install -d -o cairn -g cairn /cache
COPY --from=build /out/cairn /usr/local/bin/cairn
USER 10001
# The local chunk index; rebuilt from the repository when lost.
ENV CAIRN_CACHE_DIR=/cache
EXPOSE 9410
ENTRYPOINT ["/usr/local/bin/cairn"]
CMD ["--help"]
