# syntax=docker/dockerfile:1

# ---------------------------------------------------------------- builder ----
FROM rust:1.95-bookworm AS builder

WORKDIR /src

# Builds need no database: queries are checked at run time (and by the
# integration tests), not by sqlx's compile-time macros, and the migrations
# are embedded from migrations/ as plain files. The build needs only the
# Rust image's C compiler (aws-lc-sys and mimalloc are built with it).
ENV CARGO_TERM_COLOR=never

# Dependency layer: build every dependency against a placeholder crate, so
# that this (slow) layer is reused until Cargo.toml or Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && printf 'fn main() {}\n' > src/main.rs \
 && : > src/lib.rs \
 && cargo build --release --locked --bin alterego \
 && rm -rf src

# The real sources: src/ and migrations/ (embedded by sqlx::migrate!) are
# what the build reads; .dockerignore keeps target/, .git and local data out. The placeholder's mtimes may be newer than the real files, so
# touch the crate roots to force cargo to rebuild the crate itself.
COPY . .
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin alterego \
 && install -D -m 0755 target/release/alterego /out/alterego

# ---------------------------------------------------------------- runtime ----
FROM debian:bookworm-slim AS runtime

LABEL org.opencontainers.image.title="alterego" \
      org.opencontainers.image.description="A wire-compatible, hardened Mikoto chat server" \
      org.opencontainers.image.licenses="AGPL-3.0-only"

# CA roots for outbound TLS (SMTP, Web Push, LiveKit, S3, handle verification).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Unprivileged user; /app/data holds local media when MEDIA_STORAGE=local
# (mount a volume there to keep it).
RUN groupadd --gid 10001 alterego \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /app \
            --shell /usr/sbin/nologin alterego \
 && mkdir -p /app/data/media \
 && chown -R alterego:alterego /app/data

WORKDIR /app

COPY --from=builder /out/alterego /usr/local/bin/alterego

ENV BIND_ADDR=0.0.0.0:3511 \
    ENVIRONMENT=production \
    MEDIA_LOCAL_DIR=/app/data/media

EXPOSE 3511

# No HEALTHCHECK: the slim image carries no HTTP client (curl or wget), and
# adding one only for that would enlarge the attack surface. Orchestrators
# should probe GET /healthz (liveness) and GET /readyz (readiness) over HTTP.

USER alterego

ENTRYPOINT ["/usr/local/bin/alterego"]
CMD ["serve"]
