# Build: librdkafka is compiled from the bundled sources (needs a C toolchain and make).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin policy-push

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/policy-push /usr/local/bin/policy-push
COPY deploy/policy-push.toml /etc/policy-push/policy-push.toml
ENV POLICY_PUSH_CONFIG=/etc/policy-push/policy-push.toml
USER 65534
EXPOSE 9464
ENTRYPOINT ["policy-push"]
CMD ["run"]
