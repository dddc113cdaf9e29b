//! A partition's log in etcd: each group commit is one key, written by one txn that also
//! compares the owner key's create revision with the writer's token. Either the owner still
//! holds the partition and the batch is stored (replicated and fsynced on a majority of the
//! members before etcd answers), or nothing is written. Readers need no token: the guard at
//! write time is what makes every stored batch one written by the owner of its time.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
    WatchStream,
};

use crate::client::Etcd;
use crate::codec::{self, Batch, Manifest};
use crate::error::{ClusterError, Result};
use crate::keys;
use crate::ownership::Owned;

/// The writer of one partition's log, for the owner holding `token`. Appends take `&mut
/// self`: one txn in flight per partition, so sequence numbers are dense and in order.
/// The pause between two rounds of an append's tries (see `EtcdConfig::append_patience_ms`).
const APPEND_RETRY_PAUSE: Duration = Duration::from_millis(100);

pub struct PartitionLog {
    etcd: Etcd,
    partition: u32,
    token: i64,
    /// The sequence number the next append writes.
    next_seq: u64,
    /// An append's outcome was unknown: before the next one, find out whether it landed.
    in_doubt: bool,
    /// Once refused for the token, always refused: a deposed owner never writes again.
    fenced: bool,
}

/// One batch read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub batch: Batch,
}

/// One page of a catch-up read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Batches in sequence order, at most `read_page_batches` of them.
    pub entries: Vec<Entry>,
    /// Where the next page starts (the last entry's seq + 1, or the requested seq).
    pub next_seq: u64,
    /// True when the log may hold more after this page.
    pub more: bool,
}

/// What one try of an append found.
enum Attempt {
    Appended,
    Fenced,
    SeqTaken,
}

/// A snapshot read back: the state of the partition up to and including `covers_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub covers_seq: u64,
    pub bytes: Vec<u8>,
}

impl PartitionLog {
    /// Opens the log of a partition this node owns. The next sequence number follows both
    /// the last batch and the newest snapshot (after a truncation the log may be empty while
    /// a snapshot covers up to some seq). The first batch of a new partition has seq 1.
    pub async fn open(etcd: &Etcd, owned: &Owned) -> Result<Self> {
        Self::open_with_token(etcd, owned.partition(), owned.token()).await
    }

    /// `open` for a token held elsewhere (a node that keeps its `Owned` in another task).
    pub async fn open_with_token(etcd: &Etcd, partition: u32, token: i64) -> Result<Self> {
        let reader = LogReader::new(etcd, partition);
        let last = reader.last_seq().await?;
        let covered = reader.manifest().await?.map(|m| m.covers_seq);
        let next_seq = last.max(covered).map_or(1, |s| s.saturating_add(1));
        Ok(Self { etcd: etcd.clone(), partition, token, next_seq, in_doubt: false, fenced: false })
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    pub fn token(&self) -> i64 {
        self.token
    }

    /// The sequence number the next successful append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends one batch of opaque records as one guarded txn; returns its sequence number
    /// once etcd committed it (on a majority of members). `Fenced`: nothing written, and
    /// every later append is refused too. `Indeterminate`: the batch may or may not be in
    /// the log; it is not acknowledged, and the next append first finds out which.
    pub async fn append(&mut self, records: &[&[u8]]) -> Result<u64> {
        if self.fenced {
            return Err(self.fenced_error());
        }
        let config = self.etcd.config();
        if records.is_empty() {
            return Err(ClusterError::EmptyBatch);
        }
        if records.len() > config.batch_records_max {
            return Err(ClusterError::TooLarge {
                what: "batch (records)",
                size: records.len(),
                max: config.batch_records_max,
            });
        }
        let size = codec::batch_encoded_len(records);
        if size > config.batch_bytes_max {
            return Err(ClusterError::TooLarge { what: "batch (bytes)", size, max: config.batch_bytes_max });
        }
        let patience_ms = config.append_patience_ms;
        if self.in_doubt {
            self.settle_doubt().await?;
        }
        let seq = self.next_seq;
        let key = keys::log_key(self.partition, seq);
        let owner = keys::owner_key(self.partition);
        let value = codec::encode_batch(self.token, records);
        // Tried on each member at least once, and on for `append_patience_ms` while no try
        // gets an answer. Repeating the same txn is safe: it creates the key only if absent,
        // and a key found present with exactly this batch's bytes and the owner unchanged is
        // this batch, landed by an earlier try.
        let mut last = None;
        let patient_until = tokio::time::Instant::now() + Duration::from_millis(patience_ms);
        let members = self.etcd.member_count();
        // Bounded by the members, then by the patience (each try by the request timeout).
        for attempt in 0.. {
            if attempt >= members {
                if tokio::time::Instant::now() >= patient_until {
                    break;
                }
                tokio::time::sleep(APPEND_RETRY_PAUSE).await;
            }
            match self.try_append(seq, &key, &owner, &value).await {
                Ok(Attempt::Appended) => {
                    self.next_seq = seq.saturating_add(1);
                    self.in_doubt = false;
                    return Ok(seq);
                }
                Ok(Attempt::Fenced) => {
                    self.fenced = true;
                    return Err(self.fenced_error());
                }
                Ok(Attempt::SeqTaken) => {
                    // Another batch of this owner (an earlier append in doubt) holds the key:
                    // this batch is not written; move past it, the caller retries.
                    self.next_seq = seq.saturating_add(1);
                    self.in_doubt = false;
                    return Err(ClusterError::Indeterminate(format!(
                        "seq {seq} was already written by an earlier append of this owner; \
                         this batch was not"
                    )));
                }
                Err(e @ ClusterError::Rejected(_)) => return Err(e),
                Err(e) => {
                    self.in_doubt = true;
                    last = Some(e);
                }
            }
        }
        Err(ClusterError::Indeterminate(last.map_or_else(|| "append".to_owned(), |e| e.to_string())))
    }

    async fn try_append(&self, seq: u64, key: &str, owner: &str, value: &[u8]) -> Result<Attempt> {
        let txn = Txn::new()
            .when([
                Compare::create_revision(owner, CompareOp::Equal, self.token),
                // Never overwrite: an earlier try (or append in doubt) may hold this key.
                Compare::create_revision(key, CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(owner, Some(GetOptions::new().with_keys_only())), TxnOp::get(key, None)]);
        let resp = self.etcd.write("append", |mut kv| async move { kv.txn(txn).await }).await?;
        if resp.succeeded() {
            return Ok(Attempt::Appended);
        }
        let responses = resp.op_responses();
        let first_kv = |i: usize| match responses.get(i) {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().cloned(),
            _ => None,
        };
        if first_kv(0).map(|kv| kv.create_revision()) != Some(self.token) {
            return Ok(Attempt::Fenced);
        }
        // The owner is this token, so only this writer can have created the key.
        match first_kv(1) {
            Some(stored) if stored.value() == value => {
                tracing::debug!(partition = self.partition, seq, "an earlier try of this batch landed");
                Ok(Attempt::Appended)
            }
            _ => Ok(Attempt::SeqTaken),
        }
    }

    /// After an append whose outcome was unknown: if its key exists it landed, and the next
    /// append takes the following seq.
    async fn settle_doubt(&mut self) -> Result<()> {
        if self.contains(self.next_seq).await? {
            self.next_seq = self.next_seq.saturating_add(1);
        }
        self.in_doubt = false;
        Ok(())
    }

    /// Whether the batch with `seq` is in the log (for a caller resolving an `Indeterminate`).
    pub async fn contains(&self, seq: u64) -> Result<bool> {
        let key = keys::log_key(self.partition, seq);
        let options = GetOptions::new().with_count_only();
        let resp = self.etcd.get("contains", key.clone(), Some(options)).await?;
        Ok(resp.count() > 0)
    }

    /// Deletes every batch before `seq`, in one guarded txn. Precondition: a snapshot covers
    /// at least up to `seq - 1` (otherwise the deleted batches would be lost). etcd keeps the
    /// deleted values in its history until a compaction (`compact`) passes them.
    pub async fn truncate_before(&mut self, seq: u64) -> Result<()> {
        if self.fenced {
            return Err(self.fenced_error());
        }
        let reader = LogReader::new(&self.etcd, self.partition);
        let covered = reader.manifest().await?.map(|m| m.covers_seq);
        if seq > covered.map_or(1, |c| c.saturating_add(1)) {
            return Err(ClusterError::Precondition(format!(
                "truncate_before({seq}): no snapshot covers up to {}",
                seq - 1
            )));
        }
        let from = keys::log_key(self.partition, 0);
        let to = keys::log_key(self.partition, seq);
        self.guarded("truncate", vec![TxnOp::delete(from, Some(DeleteOptions::new().with_range(to)))]).await
    }

    /// Stores a snapshot of the partition covering every batch up to and including
    /// `covers_seq`, in chunks of `snapshot_chunk_bytes`, each chunk one guarded txn; then
    /// switches the manifest to it (one guarded txn: readers see the old snapshot or the new
    /// one, never a mix) and deletes the older snapshots' chunks. Precondition: `covers_seq`
    /// is below `next_seq` (only appended batches can be covered).
    pub async fn put_snapshot(&mut self, covers_seq: u64, bytes: &[u8]) -> Result<()> {
        if self.fenced {
            return Err(self.fenced_error());
        }
        let config = self.etcd.config().clone();
        if bytes.len() > config.snapshot_bytes_max {
            return Err(ClusterError::TooLarge { what: "snapshot", size: bytes.len(), max: config.snapshot_bytes_max });
        }
        if covers_seq >= self.next_seq {
            return Err(ClusterError::Precondition(format!(
                "snapshot covers {covers_seq}, but the log ends before {}",
                self.next_seq
            )));
        }
        let p = self.partition;
        // Leftovers of an earlier attempt at the same seq go first: chunks are put, not
        // compared, and a shorter snapshot must not inherit a longer one's tail.
        let prefix = keys::snapshot_chunks_prefix(p, covers_seq);
        self.guarded("snapshot clear", vec![TxnOp::delete(prefix.clone(), Some(DeleteOptions::new().with_prefix()))])
            .await?;
        let mut count: u32 = 0;
        for chunk in codec::chunks(bytes, config.snapshot_chunk_bytes) {
            let key = keys::snapshot_chunk_key(p, covers_seq, count);
            self.guarded("snapshot chunk", vec![TxnOp::put(key, chunk.to_vec(), None)]).await?;
            // validate() bounds the chunk count to u32.
            count = count.saturating_add(1);
        }
        let manifest =
            Manifest { covers_seq, chunks: count, total_bytes: bytes.len() as u64, crc32c: crc32c::crc32c(bytes) };
        self.guarded(
            "snapshot manifest",
            vec![TxnOp::put(keys::snapshot_manifest_key(p), codec::encode_manifest(&manifest), None)],
        )
        .await?;
        // Older snapshots: every chunk key before this snapshot's prefix.
        let older_from = keys::snapshot_prefix(p);
        self.guarded("snapshot cleanup", vec![TxnOp::delete(older_from, Some(DeleteOptions::new().with_range(prefix)))])
            .await
    }

    /// Runs `ops` in one txn guarded by the token.
    async fn guarded(&mut self, what: &str, ops: Vec<TxnOp>) -> Result<()> {
        let owner = keys::owner_key(self.partition);
        let txn = Txn::new().when([Compare::create_revision(owner, CompareOp::Equal, self.token)]).and_then(ops);
        let resp = self.etcd.write(what, |mut kv| async move { kv.txn(txn).await }).await?;
        if !resp.succeeded() {
            self.fenced = true;
            return Err(self.fenced_error());
        }
        Ok(())
    }

    fn fenced_error(&self) -> ClusterError {
        ClusterError::Fenced { partition: self.partition, token: self.token }
    }
}

/// Reads a partition's log and snapshots; any node may, owner or not.
#[derive(Clone)]
pub struct LogReader {
    etcd: Etcd,
    partition: u32,
}

impl LogReader {
    pub fn new(etcd: &Etcd, partition: u32) -> Self {
        Self { etcd: etcd.clone(), partition }
    }

    /// The last batch's seq, or `None` for an empty log.
    pub async fn last_seq(&self) -> Result<Option<u64>> {
        let prefix = keys::log_prefix(self.partition);
        let options = GetOptions::new()
            .with_range(keys::prefix_end(&prefix))
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(1)
            .with_keys_only();
        let resp = self.etcd.get("last seq", prefix.clone(), Some(options)).await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => keys::parse_log_key(self.partition, kv.key()).map(Some).ok_or_else(|| ClusterError::Corrupt {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                reason: "not a log key",
            }),
        }
    }

    /// Up to `read_page_batches` batches from `seq` on (the first may be later than `seq` if
    /// the batches before were truncated). A linearizable read: every batch acknowledged
    /// before the call is visible.
    pub async fn read_from(&self, seq: u64) -> Result<Page> {
        Ok(self.read_page(seq).await?.0)
    }

    /// `read_from`, and the etcd revision the page was read at.
    async fn read_page(&self, seq: u64) -> Result<(Page, i64)> {
        let config = self.etcd.config();
        let prefix = keys::log_prefix(self.partition);
        let options =
            GetOptions::new().with_range(keys::prefix_end(&prefix)).with_limit(config.read_page_batches as i64);
        let from = keys::log_key(self.partition, seq);
        let resp = self.etcd.get("read", from.clone(), Some(options)).await?;
        let mut entries = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let key = || String::from_utf8_lossy(kv.key()).into_owned();
            let seq = keys::parse_log_key(self.partition, kv.key())
                .ok_or_else(|| ClusterError::Corrupt { key: key(), reason: "not a log key" })?;
            let batch = codec::decode_batch(kv.value(), config.batch_records_max)
                .map_err(|reason| ClusterError::Corrupt { key: key(), reason })?;
            entries.push(Entry { seq, batch });
        }
        let next_seq = entries.last().map_or(seq, |e| e.seq.saturating_add(1));
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok((Page { entries, next_seq, more: resp.more() }, revision))
    }

    /// A follower of the log from `from_seq` on (a standby keeping up, a relay tailing).
    pub fn follow(&self, from_seq: u64) -> Follower {
        Follower { reader: self.clone(), next_seq: from_seq, tail: None }
    }

    /// The newest snapshot's manifest, or `None`.
    pub async fn manifest(&self) -> Result<Option<Manifest>> {
        Ok(self.manifest_at().await?.map(|(m, _)| m))
    }

    async fn manifest_at(&self) -> Result<Option<(Manifest, i64)>> {
        let key = keys::snapshot_manifest_key(self.partition);
        let resp = self.etcd.get("manifest", key.clone(), None).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        match resp.kvs().first() {
            None => Ok(None),
            Some(found) => codec::decode_manifest(found.value())
                .map(|m| Some((m, revision)))
                .map_err(|reason| ClusterError::Corrupt { key, reason }),
        }
    }

    /// The newest snapshot, checked against its manifest (chunk count, length, CRC32C). The
    /// chunks are read at the manifest's revision, so a snapshot replaced meanwhile is still
    /// read whole (unless etcd compacted that revision meanwhile: then an error; a retry reads
    /// the newer snapshot).
    pub async fn get_snapshot(&self) -> Result<Option<Snapshot>> {
        let Some((manifest, revision)) = self.manifest_at().await? else {
            return Ok(None);
        };
        let config = self.etcd.config();
        let key = keys::snapshot_manifest_key(self.partition);
        let corrupt = |reason| ClusterError::Corrupt { key: key.clone(), reason };
        if manifest.total_bytes > config.snapshot_bytes_max as u64 {
            return Err(ClusterError::TooLarge {
                what: "snapshot",
                size: usize::try_from(manifest.total_bytes).unwrap_or(usize::MAX),
                max: config.snapshot_bytes_max,
            });
        }
        // Chunks are never empty, so there are at most as many as bytes; this bounds the
        // reading loop whatever chunk size the writer was configured with.
        if u64::from(manifest.chunks) > manifest.total_bytes {
            return Err(corrupt("more chunks than bytes"));
        }
        let prefix = keys::snapshot_chunks_prefix(self.partition, manifest.covers_seq);
        let mut bytes = Vec::with_capacity(manifest.total_bytes as usize);
        let mut next: u32 = 0;
        let mut from = keys::snapshot_chunk_key(self.partition, manifest.covers_seq, 0);
        // Each page at most read_page_batches chunks; bounded by the chunk count.
        while next < manifest.chunks {
            let options = GetOptions::new()
                .with_range(keys::prefix_end(&prefix))
                .with_revision(revision)
                .with_limit(config.read_page_batches as i64);
            let resp = self.etcd.get("snapshot read", from.clone(), Some(options)).await?;
            if resp.kvs().is_empty() {
                return Err(corrupt("snapshot chunks missing"));
            }
            for kv in resp.kvs() {
                if keys::parse_chunk_key(&prefix, kv.key()) != Some(next) {
                    return Err(corrupt("snapshot chunks out of sequence"));
                }
                if bytes.len() + kv.value().len() > manifest.total_bytes as usize {
                    return Err(corrupt("snapshot chunks longer than the manifest says"));
                }
                bytes.extend_from_slice(kv.value());
                next = next.saturating_add(1);
            }
            from = keys::snapshot_chunk_key(self.partition, manifest.covers_seq, next);
        }
        if next != manifest.chunks
            || bytes.len() as u64 != manifest.total_bytes
            || crc32c::crc32c(&bytes) != manifest.crc32c
        {
            return Err(corrupt("snapshot does not match its manifest"));
        }
        Ok(Some(Snapshot { covers_seq: manifest.covers_seq, bytes }))
    }
}

/// Follows a partition's log: pages of batches in order as they are appended. Once it has
/// read to the end, it waits on an etcd watch of the log's keys and takes the batches from
/// the watch's events themselves (a PUT carries the batch), so a busy follower costs etcd
/// one event per batch rather than a watch and two reads. The watch is kept while it
/// delivers; it is dropped (and the next call reads a page) when it stays idle for a whole
/// wait, shows a batch out of order, is cancelled or compacted, or its member fails, so a
/// watch that went quiet on a cut-off member cannot hold a follower back longer than a wait.
pub struct Follower {
    reader: LogReader,
    next_seq: u64,
    /// The watch on the log's keys from `next_seq` on, and the member it is open on.
    tail: Option<(usize, WatchStream)>,
}

impl Follower {
    /// The seq the next batch returned will have (unless truncation removed it: a caller
    /// that finds a later first seq than this has fallen behind the newest snapshot and
    /// must start again from it).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next page from `next_seq` on. When the log has nothing there, waits up to
    /// `wait_ms` for batches appended after; an empty page means nothing was appended in that
    /// time. With `wait_ms == 0` the page is always a read (linearizable: every batch
    /// acknowledged before the call is in it or in a later page, `more` says which). A page
    /// taken from the watch holds the batches of one watch message (bounded by etcd's
    /// message size) and says `more` only when the watch showed a batch it skipped.
    pub async fn next(&mut self, wait_ms: u64) -> Result<Page> {
        if wait_ms == 0 {
            self.tail = None;
        }
        if self.tail.is_some() {
            if let Some(page) = self.next_from_tail(wait_ms).await? {
                return Ok(page);
            }
        }
        let (page, revision) = self.reader.read_page(self.next_seq).await?;
        self.next_seq = page.next_seq;
        if !page.entries.is_empty() || page.more || wait_ms == 0 {
            return Ok(page);
        }
        self.open_tail(revision).await?;
        // A watch gone at once: nothing seen in this wait; the next call reads.
        let nothing = Page { entries: Vec::new(), next_seq: self.next_seq, more: false };
        Ok(self.next_from_tail(wait_ms).await?.unwrap_or(nothing))
    }

    /// Watches the log's keys from `next_seq` on, from the revision after `revision` (that
    /// of the read that found nothing, so a batch appended between the read and the watch is
    /// not missed).
    async fn open_tail(&mut self, revision: i64) -> Result<()> {
        let etcd = &self.reader.etcd;
        let partition = self.reader.partition;
        let from = keys::log_key(partition, self.next_seq);
        let end = keys::prefix_end(&keys::log_prefix(partition));
        let options = WatchOptions::new().with_range(end).with_start_revision(revision.saturating_add(1));
        let (member, client) = etcd.client();
        let mut watch = client.watch_client();
        match etcd.bounded("follow", watch.watch(from, Some(options))).await {
            Ok(Ok(stream)) => {
                self.tail = Some((member, stream));
                Ok(())
            }
            Ok(Err(e)) => {
                etcd.demote(member);
                Err(crate::error::unavailable("follow", e))
            }
            Err(e) => {
                etcd.demote(member);
                Err(e)
            }
        }
    }

    /// The batches of the watch's next message with any, waiting up to `wait_ms`: an empty
    /// page if none came. `None` when the watch is gone (the caller reads instead).
    async fn next_from_tail(&mut self, wait_ms: u64) -> Result<Option<Page>> {
        let partition = self.reader.partition;
        let records_max = self.reader.etcd.config().batch_records_max;
        // Taken while it is read; put back only when it is kept.
        let Some((member, mut stream)) = self.tail.take() else { return Ok(None) };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        // Messages without a batch (the creation notice, progress notices, deletions of
        // batches a snapshot covers) are skipped; bounded by the deadline.
        loop {
            let resp = match tokio::time::timeout_at(deadline, stream.message()).await {
                // Idle for a whole wait: dropped, the next call reads (see the type's comment).
                Err(_) => return Ok(Some(Page { entries: Vec::new(), next_seq: self.next_seq, more: false })),
                Ok(Ok(Some(resp))) => resp,
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(e)) => {
                    tracing::debug!(partition, "a log watch failed ({e}); reading instead");
                    self.reader.etcd.demote(member);
                    return Ok(None);
                }
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                return Ok(None);
            }
            let mut entries = Vec::new();
            let mut skipped = false;
            for event in resp.events() {
                // A deleted key has version 0: truncation of batches read already.
                let Some(kv) = event.kv().filter(|kv| kv.version() > 0) else { continue };
                let key = || String::from_utf8_lossy(kv.key()).into_owned();
                let seq = keys::parse_log_key(partition, kv.key())
                    .ok_or_else(|| ClusterError::Corrupt { key: key(), reason: "not a log key" })?;
                if seq < self.next_seq {
                    continue;
                }
                if seq > self.next_seq {
                    // Not what this watch should show next: read from `next_seq` instead.
                    skipped = true;
                    break;
                }
                let batch = codec::decode_batch(kv.value(), records_max)
                    .map_err(|reason| ClusterError::Corrupt { key: key(), reason })?;
                entries.push(Entry { seq, batch });
                self.next_seq = seq.saturating_add(1);
            }
            if skipped {
                return Ok((!entries.is_empty()).then_some(Page { entries, next_seq: self.next_seq, more: true }));
            }
            if !entries.is_empty() {
                self.tail = Some((member, stream));
                return Ok(Some(Page { entries, next_seq: self.next_seq, more: false }));
            }
        }
    }
}

/// Drops etcd's history before `revision` for every key (etcd's compaction is cluster-wide):
/// the values of deleted batches and chunks are freed only then. Run by one node (or by
/// etcd's `--auto-compaction-retention`); a watch older than `revision` is cancelled and the
/// partition table lists again.
pub async fn compact(etcd: &Etcd, revision: i64) -> Result<()> {
    // Repeating a compaction is harmless (etcd refuses one at or below the last).
    etcd.read("compact", |mut kv| async move { kv.compact(revision, None).await }).await?;
    Ok(())
}

/// etcd's current revision (for `compact`).
pub async fn current_revision(etcd: &Etcd) -> Result<i64> {
    let options = GetOptions::new().with_count_only().with_prefix();
    let resp = etcd.get("revision", "/surge/", Some(options)).await?;
    resp.header().map(|h| h.revision()).ok_or_else(|| ClusterError::Unavailable("no header".to_owned()))
}
