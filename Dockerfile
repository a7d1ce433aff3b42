# Build: librdkafka is compiled from the bundled sources (needs a C toolchain and make),
# linked with the system's OpenSSL and libcurl (OAUTHBEARER OIDC).
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev libcurl4-openssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Without the `tooling` feature: no demo and no load harness in the shipped binary.
RUN cargo build --release --locked --no-default-features --bin policy-push

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 libcurl4 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/policy-push /usr/local/bin/policy-push
COPY deploy/policy-push.toml /etc/policy-push/policy-push.toml
ENV POLICY_PUSH_CONFIG=/etc/policy-push/policy-push.toml
USER 65534
EXPOSE 9464
# `status` reads /health from [http] listen and exits 1 while an integration is failing.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 CMD ["policy-push", "status"]
ENTRYPOINT ["policy-push"]
CMD ["run"]
