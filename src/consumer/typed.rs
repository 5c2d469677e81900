//! Typed sources: any source, or sub-stream of a partitioned one, with its
//! keys and payloads deserialized. A record that fails to deserialize is
//! never skipped: it comes out as an error value beside the others, with the
//! raw record and, from a committable source, its committable offset.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;

use super::offset::{CommittableMessage, CommittableOffset};
use crate::error::Result;
use crate::record::ConsumerRecord;
use crate::serde::{Deserializer, TypedRecord};

/// A committable record with its key and payload deserialized, or the error
/// (kind [`Deserialize`](crate::ErrorKind::Deserialize), raw record
/// attached) that says why not. Either way the offset is there to commit,
/// after you handled the record (for example sent it to a dead-letter
/// topic, see [`DeadLetters`](crate::producer::DeadLetters)).
#[derive(Debug, Clone)]
pub struct TypedMessage<K, V> {
    /// The typed record, or why it could not be deserialized.
    pub record: Result<TypedRecord<K, V>>,
    /// Its offset, to hand to a committer once the record is handled.
    pub offset: CommittableOffset,
}

/// What a source hands out, and what it becomes once deserialized:
/// [`ConsumerRecord`] becomes `Result<TypedRecord<K, V>>`,
/// [`CommittableMessage`] becomes [`TypedMessage<K, V>`].
pub trait Deserialize: Sized {
    /// The item with key and payload deserialized.
    type Typed<K, V>;

    /// Deserializes the key with `key` and the payload with `payload`.
    fn deserialize_with<K, V>(
        self,
        key: &impl Deserializer<K>,
        payload: &impl Deserializer<V>,
    ) -> Self::Typed<K, V>;
}

impl Deserialize for ConsumerRecord {
    type Typed<K, V> = Result<TypedRecord<K, V>>;

    fn deserialize_with<K, V>(
        self,
        key: &impl Deserializer<K>,
        payload: &impl Deserializer<V>,
    ) -> Self::Typed<K, V> {
        self.deserialize(key, payload)
    }
}

impl Deserialize for CommittableMessage {
    type Typed<K, V> = TypedMessage<K, V>;

    fn deserialize_with<K, V>(
        self,
        key: &impl Deserializer<K>,
        payload: &impl Deserializer<V>,
    ) -> Self::Typed<K, V> {
        TypedMessage {
            record: self.record.deserialize(key, payload),
            offset: self.offset,
        }
    }
}

/// `deserialize(key, payload)` on every source and sub-stream: plain sources
/// yield `Result<Result<TypedRecord<K, V>>>`, committable ones
/// `Result<TypedMessage<K, V>>`. The outer `Result` is the stream's own
/// failure, which ends it; the inner one is the record's, which does not.
///
/// ```no_run
/// # async fn run() -> reactive_kafka::Result<()> {
/// use futures::StreamExt;
/// use reactive_kafka::consumer::{self, DeserializeExt};
/// use reactive_kafka::serde::{Nullable, Utf8};
/// use reactive_kafka::{ConsumerSettings, Subscription};
///
/// let settings = ConsumerSettings::new("127.0.0.1:9092").group_id("names");
/// let (source, _control) = consumer::plain_source(settings, Subscription::topics(["names"]))?;
/// let mut names = source.deserialize(Nullable(Utf8), Utf8);
/// while let Some(next) = names.next().await {
///     match next? {
///         Ok(r) => println!("{:?} -> {}", r.key, r.payload),
///         Err(e) => eprintln!("unreadable: {e}"), // e.record() has the bytes
///     }
/// }
/// # Ok(()) }
/// ```
pub trait DeserializeExt<R: Deserialize>: Stream<Item = Result<R>> + Sized {
    /// Deserializes each item's key with `key` and payload with `payload`.
    fn deserialize<K, V, KD, VD>(self, key: KD, payload: VD) -> Deserialized<Self, KD, VD, K, V>
    where
        KD: Deserializer<K>,
        VD: Deserializer<V>,
    {
        Deserialized {
            inner: self,
            key,
            payload,
            _types: PhantomData,
        }
    }
}

impl<R: Deserialize, S: Stream<Item = Result<R>>> DeserializeExt<R> for S {}

pin_project! {
    /// A source whose items are deserialized: see [`DeserializeExt`].
    #[derive(Debug)]
    pub struct Deserialized<S, KD, VD, K, V> {
        #[pin]
        inner: S,
        key: KD,
        payload: VD,
        _types: PhantomData<fn() -> (K, V)>,
    }
}

impl<S, KD, VD, K, V, R> Stream for Deserialized<S, KD, VD, K, V>
where
    S: Stream<Item = Result<R>>,
    R: Deserialize,
    KD: Deserializer<K>,
    VD: Deserializer<V>,
{
    type Item = Result<R::Typed<K, V>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        match this.inner.poll_next(cx) {
            Poll::Ready(Some(Ok(item))) => {
                Poll::Ready(Some(Ok(item.deserialize_with(this.key, this.payload))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}
