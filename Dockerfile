# syntax=docker/dockerfile:1
#
# One Dockerfile for both functions; the build argument picks which:
#   docker build --build-arg FUNCTION=trace-writer -t trace-writer .
#   docker build --build-arg FUNCTION=trace-api    -t trace-api .
#
# Build stage: the workspace's own toolchain, the locked dependency graph, a release build
# (stripped, thin LTO, panic=abort: see [profile.release] in Cargo.toml).
# Run stage: distroless cc (glibc, libgcc, CA certificates, /etc/passwd with `nonroot`),
# no shell, no package manager, running as uid 65532. The MongoDB driver uses rustls, so
# no OpenSSL is needed; TLS roots come from the image's CA bundle.
# No secret enters the image: MONGO_URI and friends come from Secret Manager at run time.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
ARG FUNCTION
RUN case "${FUNCTION}" in \
      trace-writer|trace-api) ;; \
      *) echo "set --build-arg FUNCTION=trace-writer or FUNCTION=trace-api (got '${FUNCTION}')" >&2; exit 1 ;; \
    esac
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p "${FUNCTION}" \
 && install -D -m 0755 "target/release/${FUNCTION}" /out/function

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/function /usr/local/bin/function
USER nonroot:nonroot
# Cloud Run sets PORT; the binary listens on $PORT and defaults to 8080 without it.
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/function"]
