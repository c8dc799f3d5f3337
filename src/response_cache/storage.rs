//! The response cache's store: complete objects in memory, each body one `Bytes` served
//! without a copy; its size is bounded by Pingora's eviction manager (which calls `purge`
//! for what it evicts) and each object by `max_object_bytes`. Partial objects are never read:
//! concurrent misses wait on the cache lock for the complete one, and a lookup that comes
//! while an object is being written waits for it (see `Store::lookup`).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::cache::eviction::{CacheEntryKeyRef, EvictionManager};
use pingora::cache::key::HashBinary;
use pingora::cache::key::{CacheHashKey, CompactCacheKey};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};

/// What a stored object's meta is rebuilt from on a hit (no serialisation on the hit path).
struct Meta {
    fresh_until: SystemTime,
    created: SystemTime,
    updated: SystemTime,
    swr: u32,
    sie: u32,
    variance: Option<HashBinary>,
    header: ResponseHeader,
}

impl Meta {
    fn of(meta: &CacheMeta) -> Meta {
        Meta {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            updated: meta.updated(),
            swr: meta.stale_while_revalidate_sec(),
            sie: meta.stale_if_error_sec(),
            variance: meta.variance(),
            header: without_case(meta.response_header()),
        }
    }

    fn build(&self) -> CacheMeta {
        let mut m = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.swr,
            self.sie,
            self.header.clone(),
        );
        if self.updated != self.created {
            // Age counts from the last revalidation.
            m.set_epoch_override(self.updated);
        }
        if let Some(v) = self.variance {
            m.set_variance(v);
        }
        m
    }
}

/// The header without Pingora's second map (the names' original case): half the memory per
/// stored header, and half the copying on each hit. Served names are in lower case, which
/// HTTP/1.1 and HTTP/2 treat alike.
fn without_case(header: &ResponseHeader) -> ResponseHeader {
    let size = header.headers.len();
    let Ok(mut copy) = ResponseHeader::build_no_case(header.status, Some(size)) else {
        return header.clone();
    };
    copy.set_version(header.version);
    for (name, value) in header.headers.iter() {
        // Cannot fail: the name and value come from a valid header.
        if copy.append_header(name.clone(), value.clone()).is_err() {
            return header.clone();
        }
    }
    copy
}

struct Object {
    /// Shared with the hits being served, so a hit holds the store's lock for the lookup only.
    meta: Arc<Meta>,
    body: Bytes,
    /// The key's primary string (`policy|scheme|host|url`), for purges by URL and prefix.
    primary: Box<str>,
    compact: CompactCacheKey,
    /// What `max_bytes` counts for it, fixed when stored: the eviction manager, the `bytes`
    /// gauge and every later removal see the same number, whatever a revalidation changes.
    weight: usize,
}

/// What one object holds in memory beyond its body, key and header bytes: the header map,
/// the meta, the map slot, the eviction manager's node and the allocator's rounding.
/// Calibrated with `make bench-respcache` (resident set per cached object: about 5.8 KB for
/// a 394-byte body with 4 headers).
const OBJECT_OVERHEAD: usize = 4096;

/// The bytes `max_bytes` counts for an object: an estimate of its memory, not only its body,
/// so the bound holds for small objects too.
fn weigh(meta: &Meta, body: &[u8], primary: &str) -> usize {
    let headers = &meta.header.headers;
    let header_bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    body.len() + primary.len() + header_bytes + 200 * headers.len() + OBJECT_OVERHEAD
}

/// An object being written: its writer's id, and a flag set when the writer is done.
type Fill = (u64, Arc<tokio::sync::watch::Sender<bool>>);

/// The store.
pub struct Store {
    objects: Mutex<HashMap<HashBinary, Object>>,
    /// Objects being written, by key: each with its writer's id and a flag set when done.
    filling: Mutex<HashMap<HashBinary, Fill>>,
    next_fill: AtomicU64,
    lock_timeout: Duration,
    max_object_bytes: usize,
    bytes: AtomicUsize,
    evicted: AtomicU64,
}

impl Store {
    pub fn new(max_object_bytes: usize, lock_timeout: Duration) -> Store {
        Store {
            objects: Mutex::new(HashMap::new()),
            filling: Mutex::new(HashMap::new()),
            next_fill: AtomicU64::new(0),
            lock_timeout,
            max_object_bytes,
            bytes: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HashBinary, Object>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held (bodies and their bookkeeping).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn objects(&self) -> usize {
        self.lock().len()
    }

    /// Objects evicted to stay within `max_bytes`.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Drops every object whose primary string matches (all its variants); tells the eviction
    /// manager, so their bytes are no longer counted. How many were dropped.
    pub fn purge_where(
        &self,
        eviction: &dyn EvictionManager,
        matches: impl Fn(&str) -> bool,
    ) -> usize {
        let gone: Vec<Object> = {
            let mut objects = self.lock();
            let keys: Vec<HashBinary> = objects
                .iter()
                .filter(|(_, o)| matches(&o.primary))
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| objects.remove(k)).collect()
        };
        for o in &gone {
            self.bytes.fetch_sub(o.weight, Ordering::Relaxed);
            eviction.remove(CacheEntryKeyRef::from_entry_id(&o.compact, None));
        }
        gone.len()
    }

    fn filling(&self) -> std::sync::MutexGuard<'_, HashMap<HashBinary, Fill>> {
        self.filling.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer `id` of `key` is done (stored or not): waiting lookups look again.
    fn filled(&self, key: &HashBinary, id: u64) {
        let mut filling = self.filling();
        if filling.get(key).is_some_and(|(owner, _)| *owner == id) {
            if let Some((_, tx)) = filling.remove(key) {
                tx.send_replace(true);
            }
        }
    }

    fn hit(&self, key: &HashBinary) -> Option<(CacheMeta, HitHandler)> {
        let (meta, body, weight) = {
            let objects = self.lock();
            let o = objects.get(key)?;
            (o.meta.clone(), o.body.clone(), o.weight)
        };
        let hit = Hit {
            range: (0, body.len()),
            body,
            done: false,
            weight,
        };
        Some((meta.build(), Box::new(hit)))
    }

    fn insert(&self, key: HashBinary, object: Object) {
        let weight = object.weight;
        let old = self.lock().insert(key, object);
        self.bytes.fetch_add(weight, Ordering::Relaxed);
        if let Some(old) = old {
            self.bytes.fetch_sub(old.weight, Ordering::Relaxed);
        }
    }
}

struct Hit {
    body: Bytes,
    done: bool,
    range: (usize, usize),
    /// The object's weight, for an eviction manager that meets it again on a hit.
    weight: usize,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.range.0..self.range.1)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        let end = end.unwrap_or(len);
        if start > end || end > len {
            return Error::e_explain(ErrorType::InternalError, "range outside the stored body");
        }
        self.range = (start, end);
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.weight
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

struct Miss {
    store: &'static Store,
    key: HashBinary,
    /// This writer's entry in `Store::filling`.
    fill: u64,
    /// Taken by `finish`.
    meta: Option<Meta>,
    primary: Box<str>,
    compact: CompactCacheKey,
    body: BytesMut,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.body.len() + data.len() > self.store.max_object_bytes {
            // Pingora's size check usually stops it first (from Content-Length or as it
            // streams); this one holds for a body without a length, too.
            return Error::e_explain(ErrorType::InternalError, "object over max_object_bytes");
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let Some(meta) = self.meta.take() else {
            return Error::e_explain(ErrorType::InternalError, "miss handler finished twice");
        };
        let body = std::mem::take(&mut self.body).freeze();
        let primary = std::mem::take(&mut self.primary);
        let size = weigh(&meta, &body, &primary);
        let object = Object {
            meta: Arc::new(meta),
            body,
            primary,
            compact: std::mem::take(&mut self.compact),
            weight: size,
        };
        self.store.insert(self.key, object);
        // `Drop` tells the waiting lookups, now that the object is there.
        Ok(MissFinishType::Created(size))
    }
}

impl Drop for Miss {
    fn drop(&mut self) {
        self.store.filled(&self.key, self.fill);
    }
}

#[async_trait]
impl Storage for Store {
    /// An object being written when the lookup comes is waited for (up to the lock
    /// timeout): Pingora takes its cache lock after a lookup misses, so a lookup just before
    /// the writer stores its object, and a lock taken just after the writer lets go, would
    /// otherwise send a second request of a herd to the backend.
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let key = key.combined_bin();
        if let Some(hit) = self.hit(&key) {
            return Ok(Some(hit));
        }
        let Some(mut done) = self.filling().get(&key).map(|(_, tx)| tx.subscribe()) else {
            return Ok(None);
        };
        let _ = tokio::time::timeout(self.lock_timeout, done.wait_for(|d| *d)).await;
        Ok(self.hit(&key))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let combined = key.combined_bin();
        let fill = self.next_fill.fetch_add(1, Ordering::Relaxed);
        let (tx, _) = tokio::sync::watch::channel(false);
        self.filling().insert(combined, (fill, Arc::new(tx)));
        Ok(Box::new(Miss {
            store: self,
            key: combined,
            fill,
            meta: Some(Meta::of(meta)),
            primary: key.primary_key_str().unwrap_or_default().into(),
            compact: key.to_compact(),
            body: BytesMut::new(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let key = target.key().combined_bin();
        let gone = self.lock().remove(&key);
        Ok(match gone {
            Some(o) => {
                self.bytes.fetch_sub(o.weight, Ordering::Relaxed);
                if matches!(purge_type, PurgeType::Eviction) {
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                PurgeOutcome::Purged(None)
            }
            None => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let mut objects = self.lock();
        match objects.get_mut(&key.combined_bin()) {
            Some(o) => {
                o.meta = Arc::new(Meta::of(meta));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}
