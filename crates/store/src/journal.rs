//! A local journal for the background writers (usage events, audit entries): a record is
//! appended to a file and made durable (`fdatasync`, one for every group of records that
//! arrived meanwhile) before the answer it belongs to is finished, so a process killed
//! with `-9` loses nothing it answered. The writer still stores records in batches; a
//! segment of the journal is deleted once every record in it is stored, and segments left
//! by a crash are replayed at start (the writer makes that idempotent: usage by event id,
//! audit by comparing with the chain's tail).
//!
//! Layout: `<dir>/<kind>-<n>.jsonl`, one `{"tenant": …, "record": {…}}` per line. A torn
//! last line (the crash came mid-write) is skipped: its answer was never finished.

use berth_core::TenantId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// A segment is closed (and a new one opened) once it is this old and holds events.
const ROTATE_AFTER: Duration = Duration::from_secs(10);

/// One line, as read back.
#[derive(Deserialize)]
struct Line<T> {
    tenant: String,
    record: T,
}

/// One line, as written.
#[derive(Serialize)]
struct LineRef<'a, T> {
    tenant: &'a str,
    record: &'a T,
}

#[derive(Default)]
struct State {
    /// Lines appended and not yet written.
    buf: Vec<u8>,
    /// Sequence number of the last line appended.
    appended: u64,
    /// The open segment.
    segment: u64,
    /// Records per segment not yet stored by the writer.
    unstored: BTreeMap<u64, usize>,
}

/// The journal of one process for records of type `T`.
pub struct Journal<T> {
    dir: PathBuf,
    kind: &'static str,
    state: Mutex<State>,
    /// Sequence number of the last line that is durable.
    synced: watch::Sender<u64>,
    wake: Notify,
    _records: std::marker::PhantomData<fn(T)>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn segment_path(dir: &Path, kind: &str, n: u64) -> PathBuf {
    dir.join(format!("{kind}-{n:010}.jsonl"))
}

/// A record read back from a segment a crash left, with that segment.
pub struct Replayed<T> {
    pub tenant: TenantId,
    pub record: T,
    pub segment: u64,
}

impl<T: Serialize + DeserializeOwned> Journal<T> {
    /// Opens the journal of `kind` records in `dir` (created if missing): answers the
    /// records of segments left by an earlier process, to be stored again (each counted as
    /// unstored in its segment), and a new segment is opened after them.
    pub fn open(dir: &Path, kind: &'static str) -> std::io::Result<(Arc<Self>, Vec<Replayed<T>>)> {
        let prefix = format!("{kind}-");
        std::fs::create_dir_all(dir)?;
        let mut segments: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix(prefix.as_str())?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()
            })
            .collect();
        segments.sort_unstable();
        let mut replayed = Vec::new();
        let mut unstored = BTreeMap::new();
        for &n in &segments {
            let text = std::fs::read(segment_path(dir, kind, n))?;
            let mut count = 0;
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let Ok(l) = serde_json::from_slice::<Line<T>>(line) else {
                    tracing::warn!(
                        kind,
                        segment = n,
                        "a torn or unreadable journal line skipped"
                    );
                    continue;
                };
                let Some(tenant) = TenantId::parse(&l.tenant) else {
                    continue;
                };
                replayed.push(Replayed {
                    tenant,
                    record: l.record,
                    segment: n,
                });
                count += 1;
            }
            if count == 0 {
                let _ = std::fs::remove_file(segment_path(dir, kind, n));
            } else {
                unstored.insert(n, count);
            }
        }
        let segment = segments.last().map_or(1, |n| n + 1);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, kind, segment))?;
        let journal = Arc::new(Journal {
            dir: dir.to_owned(),
            kind,
            state: Mutex::new(State {
                segment,
                unstored,
                ..State::default()
            }),
            synced: watch::channel(0).0,
            wake: Notify::new(),
            _records: std::marker::PhantomData,
        });
        Ok((journal, replayed))
    }

    /// Appends a record for `tenant`: answers its sequence number (see
    /// [`Journal::synced`]) and its segment (for [`Journal::stored`]).
    pub fn append(&self, tenant: &TenantId, record: &T) -> (u64, u64) {
        let line = LineRef {
            tenant: tenant.as_str(),
            record,
        };
        let mut s = lock(&self.state);
        // Serialising plain data (strings, numbers, JSON values) does not fail.
        let _ = serde_json::to_writer(&mut s.buf, &line);
        s.buf.push(b'\n');
        s.appended += 1;
        let segment = s.segment;
        *s.unstored.entry(segment).or_insert(0) += 1;
        let seq = s.appended;
        drop(s);
        self.wake.notify_one();
        (seq, segment)
    }

    /// Waits until the line `seq` is durable.
    pub async fn synced(&self, seq: u64) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|&n| n >= seq).await;
    }

    /// Waits until every line appended so far is durable.
    pub async fn barrier(&self) {
        let seq = lock(&self.state).appended;
        self.synced(seq).await;
    }

    /// The writer stored `counts` records of each segment: a closed segment with none left
    /// is deleted.
    pub fn stored(&self, counts: &BTreeMap<u64, usize>) {
        let mut done = Vec::new();
        {
            let mut s = lock(&self.state);
            let open = s.segment;
            for (&seg, &n) in counts {
                if let Some(left) = s.unstored.get_mut(&seg) {
                    *left = left.saturating_sub(n);
                    if *left == 0 && seg != open {
                        s.unstored.remove(&seg);
                        done.push(seg);
                    }
                }
            }
        }
        for seg in done {
            if let Err(e) = std::fs::remove_file(segment_path(&self.dir, self.kind, seg)) {
                tracing::warn!(kind = self.kind, segment = seg, error = %e, "a stored journal segment could not be removed");
            }
        }
    }

    /// Writes and syncs what is appended, in groups, until `stop`; then the rest.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut opened = tokio::time::Instant::now();
        // The open segment's file, kept between groups (reopened after a rotation or an
        // error).
        let mut file: Option<(u64, std::fs::File)> = None;
        loop {
            let stopping = stop.is_cancelled();
            let (data, upto, segment) = {
                let mut s = lock(&self.state);
                (std::mem::take(&mut s.buf), s.appended, s.segment)
            };
            if !data.is_empty() {
                let path = segment_path(&self.dir, self.kind, segment);
                let data = Arc::new(data);
                let mut delay = Duration::from_millis(50);
                loop {
                    let (p, d, kept) = (path.clone(), data.clone(), file.take());
                    let wrote = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                        let mut f = match kept {
                            Some((n, f)) if n == segment => f,
                            _ => std::fs::OpenOptions::new()
                                .append(true)
                                .create(true)
                                .open(p)?,
                        };
                        f.write_all(&d)?;
                        f.sync_data()?;
                        Ok(f)
                    })
                    .await;
                    match wrote {
                        Ok(Ok(f)) => {
                            file = Some((segment, f));
                            break;
                        }
                        Ok(Err(e)) => {
                            tracing::error!(kind = self.kind, error = %e, "the journal cannot be written; answers wait");
                        }
                        Err(e) => {
                            tracing::error!(kind = self.kind, error = %e, "the journal writer failed")
                        }
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                self.synced.send_replace(upto);
            }
            if opened.elapsed() >= ROTATE_AFTER {
                self.rotate();
                opened = tokio::time::Instant::now();
            }
            if stopping {
                return;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = stop.cancelled() => {}
                () = tokio::time::sleep(ROTATE_AFTER) => {}
            }
        }
    }

    /// Opens the next segment if the current one holds records; the old one goes once the
    /// writer has stored them all.
    fn rotate(&self) {
        let mut s = lock(&self.state);
        let old = s.segment;
        // Lines waiting in the buffer are counted in the old segment: they must be written
        // there, so the rotation waits for a moment with none.
        if !s.buf.is_empty() || s.unstored.get(&old).copied().unwrap_or(0) == 0 {
            return;
        }
        s.segment = old + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UsageEvent;

    fn event(id: &str) -> UsageEvent {
        UsageEvent {
            id: id.into(),
            kind: "llm".into(),
            status: "ok".into(),
            cost_nano: 7,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn appended_events_survive_a_restart_and_go_once_stored() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = TenantId::parse("ten_aaaaaaaaaaaaaaaaaaaa").unwrap();
        let (j, replayed) = Journal::<UsageEvent>::open(dir.path(), "usage").unwrap();
        assert!(replayed.is_empty());
        let stop = tokio_util::sync::CancellationToken::new();
        let writer = tokio::spawn(j.clone().run(stop.clone()));
        let (seq, seg) = j.append(&tenant, &event("evt_1"));
        j.append(&tenant, &event("evt_2"));
        j.synced(seq).await;
        j.barrier().await;
        // A crash now: the next process finds both.
        stop.cancel();
        writer.await.unwrap();
        let (j2, replayed) = Journal::<UsageEvent>::open(dir.path(), "usage").unwrap();
        let ids: Vec<&str> = replayed.iter().map(|r| r.record.id.as_str()).collect();
        assert_eq!(ids, ["evt_1", "evt_2"]);
        assert!(
            replayed
                .iter()
                .all(|r| r.segment == seg && r.tenant == tenant)
        );
        // Once stored, the old segment is removed; a torn line is skipped.
        j2.stored(&BTreeMap::from([(seg, 2)]));
        assert!(!segment_path(dir.path(), "usage", seg).exists());
        let open = lock(&j2.state).segment;
        std::fs::write(
            segment_path(dir.path(), "usage", open),
            b"{\"tenant\": \"ten_aa",
        )
        .unwrap();
        let (_, replayed) = Journal::<UsageEvent>::open(dir.path(), "usage").unwrap();
        assert!(replayed.is_empty());
    }
}
