//! Turning keys and payloads into bytes and back.
//!
//! [`Serializer`] and [`Deserializer`] are small traits you implement for
//! your format; [`Utf8`] handles strings and, with the `json` feature,
//! [`Json`] handles any serde type. A record that fails to deserialize is
//! never skipped: [`ConsumerRecord::deserialize_payload`] returns an
//! [`ErrorKind::Deserialize`] error that names
//! its topic, partition and offset and carries the record itself
//! ([`Error::record`](crate::Error::record)), raw bytes included, for a
//! dead-letter topic.

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::record::{ConsumerRecord, ProducerRecord};

/// A boxed error from a (de)serializer.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Turns a value into the bytes of a key or payload.
pub trait Serializer<T: ?Sized>: Send + Sync {
    /// Serializes `value` for `topic`.
    fn serialize(&self, topic: &str, value: &T) -> std::result::Result<Bytes, BoxError>;
}

/// Turns the bytes of a key or payload into a value.
pub trait Deserializer<T>: Send + Sync {
    /// Deserializes `bytes` read from `topic`.
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> std::result::Result<T, BoxError>;
}

/// UTF-8 strings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Serializer<str> for Utf8 {
    fn serialize(&self, _: &str, value: &str) -> std::result::Result<Bytes, BoxError> {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }
}

impl Deserializer<String> for Utf8 {
    fn deserialize(&self, _: &str, bytes: &[u8]) -> std::result::Result<String, BoxError> {
        Ok(std::str::from_utf8(bytes)?.to_owned())
    }
}

/// JSON through serde (feature `json`).
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl<T: serde::Serialize + ?Sized> Serializer<T> for Json {
    fn serialize(&self, _: &str, value: &T) -> std::result::Result<Bytes, BoxError> {
        Ok(Bytes::from(serde_json::to_vec(value)?))
    }
}

#[cfg(feature = "json")]
impl<T: serde::de::DeserializeOwned> Deserializer<T> for Json {
    fn deserialize(&self, _: &str, bytes: &[u8]) -> std::result::Result<T, BoxError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

impl ConsumerRecord {
    /// Deserializes the payload. A missing payload (a tombstone) or bytes the
    /// deserializer rejects give an [`ErrorKind::Deserialize`] error naming
    /// the topic, partition and offset, with this record attached.
    pub fn deserialize_payload<T>(&self, deserializer: &impl Deserializer<T>) -> Result<T> {
        self.deserialize_part("payload", self.payload(), deserializer)
    }

    /// Deserializes the key, like [`deserialize_payload`](Self::deserialize_payload).
    pub fn deserialize_key<T>(&self, deserializer: &impl Deserializer<T>) -> Result<T> {
        self.deserialize_part("key", self.key(), deserializer)
    }

    fn deserialize_part<T>(
        &self,
        part: &str,
        bytes: Option<&[u8]>,
        d: &impl Deserializer<T>,
    ) -> Result<T> {
        let fail = |why: String| {
            Error::new(
                ErrorKind::Deserialize,
                format!("could not deserialize the {part}: {why}"),
            )
            .at(self.topic(), Some(self.partition()), Some(self.offset()))
            .with_record(self.clone())
        };
        let bytes = bytes.ok_or_else(|| fail(format!("the record has no {part}")))?;
        d.deserialize(self.topic(), bytes)
            .map_err(|e| fail(e.to_string()))
    }
}

impl ProducerRecord {
    /// Sets the payload to `value` serialized by `serializer`.
    pub fn serialize_payload<T: ?Sized>(
        self,
        serializer: &impl Serializer<T>,
        value: &T,
    ) -> Result<Self> {
        let bytes = self.serialized("payload", serializer, value)?;
        Ok(self.payload(bytes))
    }

    /// Sets the key to `value` serialized by `serializer`.
    pub fn serialize_key<T: ?Sized>(
        self,
        serializer: &impl Serializer<T>,
        value: &T,
    ) -> Result<Self> {
        let bytes = self.serialized("key", serializer, value)?;
        Ok(self.key(bytes))
    }

    fn serialized<T: ?Sized>(
        &self,
        part: &str,
        serializer: &impl Serializer<T>,
        value: &T,
    ) -> Result<Bytes> {
        serializer.serialize(&self.topic, value).map_err(|e| {
            Error::new(
                ErrorKind::Serialize,
                format!("could not serialize the {part}: {e}"),
            )
            .at(&self.topic, self.partition, None)
        })
    }
}
