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

    /// What a null key or payload (a record without one, such as a
    /// tombstone) becomes. By default an error: null is no value of `T`.
    /// [`Nullable`] turns it into `None`.
    fn deserialize_null(&self, topic: &str) -> std::result::Result<T, BoxError> {
        let _ = topic;
        Err(NULL.into())
    }
}

const NULL: &str = "null (use serde::Nullable to accept it as None)";

/// A deserializer of `Option<T>` from one of `T`: null is `None` (keyless
/// records, tombstones), anything else is `Some` of what `D` makes of it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nullable<D>(pub D);

impl<T, D: Deserializer<T>> Deserializer<Option<T>> for Nullable<D> {
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> std::result::Result<Option<T>, BoxError> {
        self.0.deserialize(topic, bytes).map(Some)
    }

    fn deserialize_null(&self, _: &str) -> std::result::Result<Option<T>, BoxError> {
        Ok(None)
    }
}

/// The bytes as they are, for a key or payload you do not decode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Deserializer<Bytes> for Raw {
    fn deserialize(&self, _: &str, bytes: &[u8]) -> std::result::Result<Bytes, BoxError> {
        Ok(Bytes::copy_from_slice(bytes))
    }
}

impl Serializer<[u8]> for Raw {
    fn serialize(&self, _: &str, value: &[u8]) -> std::result::Result<Bytes, BoxError> {
        Ok(Bytes::copy_from_slice(value))
    }
}

/// UTF-8 strings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Serializer<str> for Utf8 {
    fn serialize(&self, _: &str, value: &str) -> std::result::Result<Bytes, BoxError> {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }
}

impl Serializer<String> for Utf8 {
    fn serialize(&self, _: &str, value: &String) -> std::result::Result<Bytes, BoxError> {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }
}

impl Serializer<&str> for Utf8 {
    fn serialize(&self, _: &str, value: &&str) -> std::result::Result<Bytes, BoxError> {
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
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
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
        match bytes {
            Some(bytes) => d.deserialize(self.topic(), bytes),
            None => d.deserialize_null(self.topic()),
        }
        .map_err(|e| fail(e.to_string()))
    }

    /// Deserializes key and payload into a [`TypedRecord`], which keeps
    /// this record for its topic, partition, offset, timestamp and headers.
    /// The error (kind [`ErrorKind::Deserialize`]) names the part that
    /// failed and carries this record, raw bytes included.
    pub fn deserialize<K, V>(
        self,
        key: &impl Deserializer<K>,
        payload: &impl Deserializer<V>,
    ) -> Result<TypedRecord<K, V>> {
        let k = self.deserialize_key(key)?;
        let v = self.deserialize_payload(payload)?;
        Ok(TypedRecord {
            key: k,
            payload: v,
            record: self,
        })
    }
}

/// A record whose key and payload were deserialized (see
/// [`ConsumerRecord::deserialize`] and the sources' `deserialize` adapter,
/// [`DeserializeExt`](crate::consumer::DeserializeExt)).
#[derive(Debug, Clone, PartialEq)]
pub struct TypedRecord<K, V> {
    /// The key.
    pub key: K,
    /// The payload.
    pub payload: V,
    /// The record as read: topic, partition, offset, timestamp, headers
    /// and the raw bytes.
    pub record: ConsumerRecord,
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

/// A record to produce whose key and payload are values, serialized when
/// it is handed to a sink (see
/// [`SerializeExt`](crate::producer::SerializeExt)) or with
/// [`serialize`](TypedProducerRecord::serialize). A `None` key or payload
/// is produced as null.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedProducerRecord<K, V> {
    /// Topic, partition, timestamp and headers.
    pub record: ProducerRecord,
    /// The key.
    pub key: Option<K>,
    /// The payload.
    pub payload: Option<V>,
}

impl<K, V> TypedProducerRecord<K, V> {
    /// A record for `topic` with no key and no payload (the name is shared
    /// as in [`ProducerRecord::new`]).
    pub fn new(topic: impl Into<crate::record::Topic>) -> Self {
        TypedProducerRecord {
            record: ProducerRecord::new(topic),
            key: None,
            payload: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: K) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: V) -> Self {
        self.payload = Some(payload);
        self
    }

    /// Sends to this partition instead of the partitioner's choice.
    pub fn partition(mut self, partition: i32) -> Self {
        self.record = self.record.partition(partition);
        self
    }

    /// Sets the timestamp (milliseconds since the Unix epoch).
    pub fn timestamp(mut self, millis: i64) -> Self {
        self.record = self.record.timestamp(millis);
        self
    }

    /// Appends a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.record = self.record.header(key, value);
        self
    }

    /// The record with key and payload serialized: an error of kind
    /// [`ErrorKind::Serialize`] names the topic and the part that failed.
    pub fn serialize(
        self,
        key: &impl Serializer<K>,
        payload: &impl Serializer<V>,
    ) -> Result<ProducerRecord> {
        let mut record = self.record;
        if let Some(k) = &self.key {
            record = record.serialize_key(key, k)?;
        }
        if let Some(v) = &self.payload {
            record = record.serialize_payload(payload, v)?;
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Timestamp;

    fn record(key: Option<&str>, payload: Option<&str>) -> ConsumerRecord {
        ConsumerRecord::new(
            "t",
            2,
            7,
            Timestamp::CreateTime(1),
            key.map(str::as_bytes),
            payload.map(str::as_bytes),
            Vec::new(),
        )
    }

    #[test]
    fn null_is_an_error_unless_nullable() {
        let err = record(None, Some("v"))
            .deserialize(&Utf8, &Utf8)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Deserialize);
        assert!(err.to_string().contains("key"), "{err}");
        assert!(err.to_string().contains("Nullable"), "{err}");
        let c = err.coordinates().unwrap();
        assert_eq!((c.partition, c.offset), (Some(2), Some(7)));
        assert!(err.record().is_some());

        let typed = record(None, Some("v"))
            .deserialize(&Nullable(Utf8), &Utf8)
            .unwrap();
        assert_eq!((typed.key, typed.payload.as_str()), (None, "v"));
        let tombstone = record(Some("k"), None)
            .deserialize(&Utf8, &Nullable(Raw))
            .unwrap();
        assert_eq!((tombstone.key.as_str(), tombstone.payload), ("k", None));
    }

    #[test]
    fn a_typed_record_to_produce_serializes_key_and_payload() {
        let r = TypedProducerRecord::<&str, String>::new("out")
            .key("k")
            .payload("v".to_owned())
            .partition(3)
            .header("h", "x")
            .serialize(&Utf8, &Utf8)
            .unwrap();
        assert_eq!(r.key_bytes().as_deref(), Some(&b"k"[..]));
        assert_eq!(r.payload_bytes().as_deref(), Some(&b"v"[..]));
        assert_eq!(r.partition_number(), Some(3));
        assert_eq!(r.headers().len(), 1);
        let none = TypedProducerRecord::<&str, String>::new("out")
            .serialize(&Utf8, &Utf8)
            .unwrap();
        assert_eq!((none.key_bytes(), none.payload_bytes()), (None, None));
    }
}
