//! What `check-config` can tell about the librdkafka client configurations without
//! connecting: librdkafka itself reads every property (an unknown name, a bad value, or a
//! feature this build lacks is refused, and named), and a SASL mechanism must come with
//! the settings it needs, which librdkafka only checks when a client starts.

use rdkafka::ClientConfig;

/// Why the `[kafka]` properties would make `run` fail, naming the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KafkaConfigError {
    /// librdkafka refused `key`. Its error is not kept as the source: its message repeats
    /// the value, which may be a secret pasted into the wrong key; `reason` is that
    /// message with the value taken out.
    #[error("kafka: the {client} configuration is refused: {key}: {reason}")]
    Refused {
        client: &'static str,
        key: String,
        reason: String,
    },
    #[error("kafka: {0}")]
    Client(String),
    #[error("kafka: sasl.mechanisms = {mechanism} needs {missing} (set it under [kafka], or its POLICY_PUSH_KAFKA_… variable)")]
    Sasl {
        mechanism: String,
        missing: &'static str,
    },
}

/// Checks the consumer's and the dead-letter producer's configurations.
pub fn client_configs(kafka: &ClientConfig) -> Result<(), KafkaConfigError> {
    for (client, cfg) in [
        ("consumer", kafka.clone()),
        ("dead-letter producer", super::producer_config(kafka)),
    ] {
        cfg.create_native_config()
            .map_err(|e| refused(client, &e))?;
    }
    sasl(kafka)
}

/// librdkafka's refusal without the property's value, which may be a secret (its own
/// message repeats the value).
fn refused(client: &'static str, e: &rdkafka::error::KafkaError) -> KafkaConfigError {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, desc, key, value) => {
            KafkaConfigError::Refused {
                client,
                key: key.clone(),
                reason: crate::error::without_value(desc, value),
            }
        }
        other => {
            KafkaConfigError::Client(format!("the {client} configuration is refused: {other}"))
        }
    }
}

fn sasl(kafka: &ClientConfig) -> Result<(), KafkaConfigError> {
    let protocol = kafka
        .get("security.protocol")
        .unwrap_or("plaintext")
        .to_ascii_lowercase();
    if !protocol.starts_with("sasl") {
        return Ok(());
    }
    let mechanism = kafka
        .get("sasl.mechanisms")
        .or(kafka.get("sasl.mechanism"))
        .unwrap_or("GSSAPI");
    let needs: &[&'static str] = match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => &["sasl.username", "sasl.password"],
        "OAUTHBEARER" if kafka.get("sasl.oauthbearer.method") == Some("oidc") => &[
            "sasl.oauthbearer.client.id",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.token.endpoint.url",
        ],
        _ => &[],
    };
    match needs
        .iter()
        .find(|k| kafka.get(k).is_none_or(str::is_empty))
    {
        Some(missing) => Err(KafkaConfigError::Sasl {
            mechanism: mechanism.to_string(),
            missing,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(props: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", "127.0.0.1:9");
        for (k, v) in props {
            c.set(*k, *v);
        }
        c
    }

    #[test]
    fn every_sasl_mechanism_and_tls_is_compiled_in() {
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] {
            let c = cfg(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", mechanism),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ]);
            assert_eq!(client_configs(&c), Ok(()), "{mechanism}");
        }
        assert_eq!(
            client_configs(&cfg(&[("security.protocol", "SSL")])),
            Ok(())
        );
        for codec in ["zstd", "lz4", "snappy", "gzip"] {
            assert_eq!(
                client_configs(&cfg(&[("compression.type", codec)])),
                Ok(()),
                "{codec}"
            );
        }
    }

    #[test]
    fn a_refused_property_is_named_without_its_value() {
        // librdkafka's own message repeats the value, which may be a secret pasted into
        // the wrong key.
        let e = client_configs(&cfg(&[("compression.type", "s3cr3t-v4lue")])).unwrap_err();
        assert!(e.to_string().contains("compression.type"), "{e}");
        assert!(!format!("{e} {e:?}").contains("s3cr3t-v4lue"), "{e:?}");
    }

    #[test]
    fn oauthbearer_oidc_is_built_in() {
        let oidc = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "OAUTHBEARER"),
            ("sasl.oauthbearer.method", "oidc"),
            ("sasl.oauthbearer.client.id", "policy-push"),
            ("sasl.oauthbearer.client.secret", "s"),
            (
                "sasl.oauthbearer.token.endpoint.url",
                "https://idp.internal/oauth2/token",
            ),
        ];
        assert_eq!(client_configs(&cfg(&oidc)), Ok(()));
        let e = client_configs(&cfg(&oidc[..5])).unwrap_err();
        assert!(
            e.to_string()
                .contains("sasl.oauthbearer.token.endpoint.url"),
            "{e}"
        );
    }

    #[test]
    fn unknown_properties_and_missing_sasl_settings_are_named() {
        let e = client_configs(&cfg(&[("no.such.property", "1")])).unwrap_err();
        assert!(e.to_string().contains("no.such.property"), "{e}");
        let e = client_configs(&cfg(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("sasl.password"), "{e}");
    }
}
