//! An Apache Kafka broker in a Docker container, for machines with Docker
//! (feature `testcontainers`). Uses the `apache/kafka` image in KRaft mode
//! through `testcontainers-modules`; the container is removed when the
//! [`KafkaContainer`] is dropped.

use std::fmt;

use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};
use testcontainers_modules::kafka::apache;

use crate::error::{Error, ErrorKind, Result};

/// The image tag started by [`KafkaContainer::start`].
pub const KAFKA_IMAGE_TAG: &str = "4.1.1";

/// A running `apache/kafka` container.
pub struct KafkaContainer {
    _container: ContainerAsync<apache::Kafka>,
    bootstrap: String,
}

impl fmt::Debug for KafkaContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaContainer")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

impl KafkaContainer {
    /// Starts `apache/kafka:4.1.1` and waits until it accepts clients.
    pub async fn start() -> Result<Self> {
        let container = apache::Kafka::default()
            .with_jvm_image()
            .with_tag(KAFKA_IMAGE_TAG)
            .start()
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::BrokerUnreachable,
                    format!("could not start the Kafka container: {e}"),
                )
            })?;
        let port = container
            .get_host_port_ipv4(apache::KAFKA_PORT)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::BrokerUnreachable,
                    format!("the Kafka container has no port: {e}"),
                )
            })?;
        Ok(KafkaContainer {
            _container: container,
            bootstrap: format!("127.0.0.1:{port}"),
        })
    }

    /// The `bootstrap.servers` value that reaches the container.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

/// True when a Docker engine looks reachable (`DOCKER_HOST` is set or the
/// default socket exists).
pub fn docker_available() -> bool {
    std::env::var_os("DOCKER_HOST").is_some()
        || std::path::Path::new("/var/run/docker.sock").exists()
}
