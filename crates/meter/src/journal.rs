//! The usage journal: every usage event is appended to a local file and made durable
//! (`fdatasync`, one for every group of events that arrived meanwhile) before the answer
//! it bills is finished, so a process killed with `-9` loses no answered call. The
//! recorder still writes events to the store in batches; a segment of the journal is
//! deleted once every event in it is stored, and segments left by a crash are replayed at
//! start (writes are idempotent by event id, so an event stored before the crash counts
//! once).
//!
//! Layout: `<dir>/usage-<n>.jsonl`, one `{"tenant": …, "event": {…}}` per line. A torn
//! last line (the crash came mid-write) is skipped: its answer was never finished.

use berth_core::TenantId;
use berth_store::UsageEvent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// A segment is closed (and a new one opened) once it is this old and holds events.
const ROTATE_AFTER: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
struct Line {
    tenant: String,
    event: UsageEvent,
}

#[derive(Default)]
struct State {
    /// Lines appended and not yet written.
    buf: Vec<u8>,
    /// Sequence number of the last line appended.
    appended: u64,
    /// The open segment.
    segment: u64,
    /// Events per segment not yet stored by the recorder.
    unstored: BTreeMap<u64, usize>,
}

/// The journal of one process.
pub struct Journal {
    dir: PathBuf,
    state: Mutex<State>,
    /// Sequence number of the last line that is durable.
    synced: watch::Sender<u64>,
    wake: Notify,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("usage-{n:010}.jsonl"))
}

/// An event read back from a segment a crash left, with that segment.
pub struct Replayed {
    pub tenant: TenantId,
    pub event: UsageEvent,
    pub segment: u64,
}

impl Journal {
    /// Opens the journal in `dir` (created if missing): answers the events of segments
    /// left by an earlier process, to be stored again (each counted as unstored in its
    /// segment), and a new segment is opened after them.
    pub fn open(dir: &Path) -> std::io::Result<(Arc<Journal>, Vec<Replayed>)> {
        std::fs::create_dir_all(dir)?;
        let mut segments: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("usage-")?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()
            })
            .collect();
        segments.sort_unstable();
        let mut replayed = Vec::new();
        let mut unstored = BTreeMap::new();
        for &n in &segments {
            let text = std::fs::read(segment_path(dir, n))?;
            let mut count = 0;
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let Ok(l) = serde_json::from_slice::<Line>(line) else {
                    tracing::warn!(
                        segment = n,
                        "a torn or unreadable usage journal line skipped"
                    );
                    continue;
                };
                let Some(tenant) = TenantId::parse(&l.tenant) else {
                    continue;
                };
                replayed.push(Replayed {
                    tenant,
                    event: l.event,
                    segment: n,
                });
                count += 1;
            }
            if count == 0 {
                let _ = std::fs::remove_file(segment_path(dir, n));
            } else {
                unstored.insert(n, count);
            }
        }
        let segment = segments.last().map_or(1, |n| n + 1);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, segment))?;
        let journal = Arc::new(Journal {
            dir: dir.to_owned(),
            state: Mutex::new(State {
                segment,
                unstored,
                ..State::default()
            }),
            synced: watch::channel(0).0,
            wake: Notify::new(),
        });
        Ok((journal, replayed))
    }

    /// Appends an event for `tenant`: answers its sequence number (see [`Journal::synced`])
    /// and its segment (for [`Journal::stored`]).
    pub fn append(&self, tenant: &TenantId, event: &UsageEvent) -> (u64, u64) {
        let line = Line {
            tenant: tenant.as_str().to_owned(),
            event: event.clone(),
        };
        let mut s = lock(&self.state);
        // Serialising a struct of strings and numbers does not fail.
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

    /// The recorder stored `counts` events of each segment: a closed segment with none
    /// left is deleted.
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
            if let Err(e) = std::fs::remove_file(segment_path(&self.dir, seg)) {
                tracing::warn!(segment = seg, error = %e, "a stored usage journal segment could not be removed");
            }
        }
    }

    /// Writes and syncs what is appended, in groups, until `stop`; then the rest.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut opened = tokio::time::Instant::now();
        loop {
            let stopping = stop.is_cancelled();
            let (data, upto, segment) = {
                let mut s = lock(&self.state);
                (std::mem::take(&mut s.buf), s.appended, s.segment)
            };
            if !data.is_empty() {
                let path = segment_path(&self.dir, segment);
                let mut delay = Duration::from_millis(50);
                loop {
                    let (p, d) = (path.clone(), data.clone());
                    let wrote = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                        let mut f = std::fs::OpenOptions::new()
                            .append(true)
                            .create(true)
                            .open(p)?;
                        f.write_all(&d)?;
                        f.sync_data()
                    })
                    .await;
                    match wrote {
                        Ok(Ok(())) => break,
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "the usage journal cannot be written; answers wait");
                        }
                        Err(e) => tracing::error!(error = %e, "the usage journal writer failed"),
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

    /// Opens the next segment if the current one holds events; the old one goes once the
    /// recorder has stored them all.
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
        let (j, replayed) = Journal::open(dir.path()).unwrap();
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
        let (j2, replayed) = Journal::open(dir.path()).unwrap();
        let ids: Vec<&str> = replayed.iter().map(|r| r.event.id.as_str()).collect();
        assert_eq!(ids, ["evt_1", "evt_2"]);
        assert!(
            replayed
                .iter()
                .all(|r| r.segment == seg && r.tenant == tenant)
        );
        // Once stored, the old segment is removed; a torn line is skipped.
        j2.stored(&BTreeMap::from([(seg, 2)]));
        assert!(!segment_path(dir.path(), seg).exists());
        let open = lock(&j2.state).segment;
        std::fs::write(segment_path(dir.path(), open), b"{\"tenant\": \"ten_aa").unwrap();
        let (_, replayed) = Journal::open(dir.path()).unwrap();
        assert!(replayed.is_empty());
    }
}
