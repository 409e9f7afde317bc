# syntax=docker/dockerfile:1
#
# Threat Bus container image (docs/deploy.md#docker).
#
#   docker build -t threatbus .
#   docker run --rm -v ./config.yaml:/etc/threatbus/config.yaml:ro \
#     -e THREATBUS_PLUGINS__APPS__ZMQ__HOST=0.0.0.0 \
#     -p 13370-13372:13370-13372 threatbus

# Build stage. rust:1-bookworm brings what the native dependencies need: a C and C++ compiler
# for libzmq (built from source by zmq-sys) and perl and make for the OpenSSL that the Zeek app
# compiles in. Bookworm, like the runtime image, so the binary finds the glibc and libstdc++ it
# was linked against.
FROM rust:1-bookworm AS builder
WORKDIR /src
# Only what `cargo build` reads: the workspace manifest, the lock file and the members.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY plugins plugins
# The target directory is a cache mount (kept between builds, not part of the image), so the
# binary is copied out of it within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin threatbus \
    && install -D -m 0755 target/release/threatbus /out/threatbus \
    && install -d /out/state

# Runtime stage: glibc, libgcc_s, libstdc++ and CA certificates (for RabbitMQ, MISP and CIF over
# TLS), no shell, no package manager. The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="threatbus" \
      org.opencontainers.image.description="Threat Bus: a pub/sub broker for STIX 2.1 threat intelligence" \
      org.opencontainers.image.licenses="BSD-3-Clause"
COPY --from=builder /out/threatbus /usr/local/bin/threatbus
# Working directory owned by the runtime user: a relative logging.filename and a .env file are
# looked up here. Mount a volume on it to keep a log file.
COPY --from=builder --chown=65532:65532 /out/state /var/lib/threatbus
WORKDIR /var/lib/threatbus
USER 65532:65532
# ZeroMQ app: manage (REQ/REP), pub, sub. Zeek app: Broker.
EXPOSE 13370 13371 13372 47761
# The first SIGTERM drains the queues for up to bus.shutdown_timeout (10 s by default): stop
# with a longer grace period (docker stop -t 30).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/threatbus"]
CMD ["-c", "/etc/threatbus/config.yaml"]
