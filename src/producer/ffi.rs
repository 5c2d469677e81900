//! Every `unsafe` call the producer makes into librdkafka, with the reason
//! it is sound beside each block. One thing rdkafka does not offer: naming
//! a record's topic by librdkafka's handle of it (`rd_kafka_topic_t`)
//! instead of by its name. rdkafka's `BaseProducer::send` copies the name
//! into a new C string for every record, and librdkafka then looks the
//! topic up by that name under its client lock; [`TopicHandles`] makes a
//! handle once per topic and [`produce`] hands it to `rd_kafka_produceva`.
//!
//! The handles must be released before the producer is destroyed
//! ([`TopicHandles::clear`]).

use std::ffi::{c_int, c_void, CString};
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

use rdkafka::bindings as rdsys;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::record::Topic;

/// How many topics a producer keeps handles of; a record of a further
/// topic gets a handle of its own, made and released around its send (what
/// sending by name costs librdkafka anyway).
const KEPT: usize = 16;

/// librdkafka's handle of one topic, released when dropped.
pub(crate) struct TopicHandle {
    topic: Topic,
    rkt: NonNull<rdsys::rd_kafka_topic_t>,
}

// SAFETY: librdkafka's topic handles are reference counted and may be used
// and released from any thread.
unsafe impl Send for TopicHandle {}
// SAFETY: as above; the handle is only passed to librdkafka, never written.
unsafe impl Sync for TopicHandle {}

impl TopicHandle {
    fn new(rk: NonNull<rdsys::rd_kafka_t>, topic: &Topic) -> Result<Self, KafkaError> {
        let name = CString::new(topic.as_str())?;
        // SAFETY: `rk` is a live producer (the caller holds it); librdkafka
        // copies `name`, which outlives the call; a null configuration
        // takes the producer's topic defaults.
        let rkt = unsafe { rdsys::rd_kafka_topic_new(rk.as_ptr(), name.as_ptr(), ptr::null_mut()) };
        match NonNull::new(rkt) {
            Some(rkt) => Ok(TopicHandle {
                topic: topic.clone(),
                rkt,
            }),
            // SAFETY: reads this thread's last librdkafka error, which
            // `rd_kafka_topic_new` set when it returned null.
            None => Err(KafkaError::MessageProduction(
                unsafe { rdsys::rd_kafka_last_error() }.into(),
            )),
        }
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: made by `rd_kafka_topic_new` and released once, here;
        // records still in flight hold references of their own.
        unsafe { rdsys::rd_kafka_topic_destroy(self.rkt.as_ptr()) }
    }
}

/// A topic handle for one send: kept by the producer, or made for it.
pub(crate) enum Handle<'a> {
    Kept(&'a TopicHandle),
    Once(TopicHandle),
}

impl Handle<'_> {
    fn ptr(&self) -> *mut rdsys::rd_kafka_topic_t {
        match self {
            Handle::Kept(h) => h.rkt.as_ptr(),
            Handle::Once(h) => h.rkt.as_ptr(),
        }
    }
}

/// The topic handles of one producer, made on first use. A slot, once
/// set, keeps its handle until [`clear`](Self::clear) (which takes the
/// producer exclusively), so a lookup is a few loads and no lock.
#[derive(Default)]
pub(crate) struct TopicHandles {
    slots: [OnceLock<TopicHandle>; KEPT],
}

impl TopicHandles {
    /// The handle of `topic` for a record sent through `rk`.
    pub(crate) fn get(
        &self,
        rk: NonNull<rdsys::rd_kafka_t>,
        topic: &Topic,
    ) -> Result<Handle<'_>, KafkaError> {
        for slot in &self.slots {
            let kept = match slot.get() {
                Some(kept) => kept,
                None => {
                    // Another sender may fill the slot first (with this
                    // topic or another): then the one made here goes.
                    let _ = slot.set(TopicHandle::new(rk, topic)?);
                    slot.get().expect("the slot was just set")
                }
            };
            if kept.topic == *topic {
                return Ok(Handle::Kept(kept));
            }
        }
        Ok(Handle::Once(TopicHandle::new(rk, topic)?))
    }

    /// Releases every handle (before the producer is destroyed).
    pub(crate) fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.take();
        }
    }
}

/// A headers list being built for one record; destroyed when dropped,
/// unless librdkafka took it.
pub(crate) struct Headers(NonNull<rdsys::rd_kafka_headers_t>);

impl Headers {
    pub(crate) fn with_capacity(n: usize) -> Self {
        // SAFETY: allocates an empty list; never null (librdkafka aborts
        // when out of memory).
        let list = unsafe { rdsys::rd_kafka_headers_new(n) };
        Headers(NonNull::new(list).expect("rd_kafka_headers_new returned null"))
    }

    /// Adds a header; librdkafka copies the name and the value.
    pub(crate) fn add(&mut self, name: &str, value: Option<&[u8]>) {
        let (value, len) = value.map_or((ptr::null(), 0), |v| (v.as_ptr(), v.len()));
        // SAFETY: the list is ours; name and value are read for their
        // given lengths during the call only. It fails only on a read-only
        // list, which this is not.
        unsafe {
            rdsys::rd_kafka_header_add(
                self.0.as_ptr(),
                name.as_ptr().cast(),
                name.len() as isize,
                value.cast(),
                len as isize,
            );
        }
    }
}

impl Drop for Headers {
    fn drop(&mut self) {
        // SAFETY: the list is ours: `produce` forgets it once librdkafka
        // took it.
        unsafe { rdsys::rd_kafka_headers_destroy(self.0.as_ptr()) }
    }
}

/// One record for [`produce`]: librdkafka copies key, payload and headers
/// (`RD_KAFKA_MSG_F_COPY`).
pub(crate) struct Produce<'a> {
    pub(crate) topic: &'a Handle<'a>,
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: Option<&'a [u8]>,
    pub(crate) timestamp: Option<i64>,
    pub(crate) headers: Option<Headers>,
    /// Handed to the delivery callback; stays the caller's on failure.
    pub(crate) opaque: *mut c_void,
}

/// Hands a record to librdkafka without blocking.
pub(crate) fn produce(
    rk: NonNull<rdsys::rd_kafka_t>,
    record: Produce<'_>,
) -> Result<(), RDKafkaErrorCode> {
    use rdsys::rd_kafka_vtype_t::*;
    let vu = |vtype, u| rdsys::rd_kafka_vu_t { vtype, u };
    let mem = |b: Option<&[u8]>| {
        let (ptr, size) = b.map_or((ptr::null_mut(), 0), |b| {
            (b.as_ptr() as *mut c_void, b.len())
        });
        rdsys::rd_kafka_vu_s__bindgen_ty_1 {
            mem: rdsys::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 { ptr, size },
        }
    };
    type U = rdsys::rd_kafka_vu_s__bindgen_ty_1;
    let headers = record
        .headers
        .as_ref()
        .map_or(ptr::null_mut(), |h| h.0.as_ptr());
    let vus = [
        vu(
            RD_KAFKA_VTYPE_RKT,
            U {
                rkt: record.topic.ptr(),
            },
        ),
        vu(
            RD_KAFKA_VTYPE_PARTITION,
            // -1: RD_KAFKA_PARTITION_UA, the partitioner chooses.
            U {
                i32_: record.partition.unwrap_or(-1),
            },
        ),
        vu(
            RD_KAFKA_VTYPE_MSGFLAGS,
            U {
                i: rdsys::RD_KAFKA_MSG_F_COPY as c_int,
            },
        ),
        vu(RD_KAFKA_VTYPE_VALUE, mem(record.payload)),
        vu(RD_KAFKA_VTYPE_KEY, mem(record.key)),
        vu(RD_KAFKA_VTYPE_OPAQUE, U { ptr: record.opaque }),
        vu(
            RD_KAFKA_VTYPE_TIMESTAMP,
            U {
                i64_: record.timestamp.unwrap_or(0),
            },
        ),
        vu(RD_KAFKA_VTYPE_HEADERS, U { headers }),
    ];
    // SAFETY: `rk` is a live producer and the topic handle a live handle of
    // it; every pointer in `vus` is valid for the call (key and payload are
    // copied); on success librdkafka owns the headers list, on failure it
    // leaves the list and the opaque to the caller.
    let error = unsafe { rdsys::rd_kafka_produceva(rk.as_ptr(), vus.as_ptr(), vus.len()) };
    if error.is_null() {
        std::mem::forget(record.headers);
        return Ok(());
    }
    // SAFETY: `error` is the non-null error object just returned, read
    // once and destroyed once.
    let code = unsafe {
        let code = rdsys::rd_kafka_error_code(error);
        rdsys::rd_kafka_error_destroy(error);
        code
    };
    Err(code.into())
}
