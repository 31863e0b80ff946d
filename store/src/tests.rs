//! The store's own guarantees: group commit, all-or-nothing steps, busy and
//! stuck detection, refusal of an earlier release's sled directory.

use std::sync::Arc;
use std::time::Duration;

use crate::{Store, StoreError, Table, Versioned, U128};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Entry {
    digest: String,
    count: u32,
}

const ENTRIES: Table<Versioned<Entry>> = Table::new("entries", "entry");
const TOTALS: Table<U128> = Table::new("totals", "total");

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, &[ENTRIES.name(), TOTALS.name()]).expect("open")
}

#[derive(Debug, PartialEq)]
enum TestError {
    Store(String),
    Refused,
}

impl From<StoreError> for TestError {
    fn from(e: StoreError) -> Self {
        TestError::Store(e.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s4_concurrent_writes_share_commits_and_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for i in 0..512u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .write(move |w| {
                    let total = w.get(&TOTALS, b"all")?.unwrap_or(0);
                    w.put(&TOTALS, b"all", &(total + 1))?;
                    w.put(
                        &ENTRIES,
                        format!("id-{i}"),
                        &Entry {
                            digest: format!("d{i}"),
                            count: 1,
                        },
                    )?;
                    Ok::<_, TestError>(())
                })
                .await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("write");
    }
    assert_eq!(store.get(&TOTALS, b"all").expect("read"), Some(512));
    assert_eq!(store.all(&ENTRIES).expect("scan").len(), 512);
    let stats = store.stats();
    assert_eq!(stats.steps, 512);
    assert!(
        stats.commits < 512,
        "concurrent writes were not batched: {stats:?}"
    );
}

#[tokio::test]
async fn a_refused_step_leaves_nothing_and_spares_the_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let refused = store
        .write(|w| {
            w.put(&TOTALS, b"x", &7)?;
            Err::<(), _>(TestError::Refused)
        })
        .await;
    assert_eq!(refused, Err(TestError::Refused));
    assert_eq!(store.get(&TOTALS, b"x").expect("read"), None);
    let kept = store
        .write(|w| {
            w.put(&TOTALS, b"y", &1)?;
            assert_eq!(
                w.get(&TOTALS, b"y")?,
                Some(1),
                "a step reads its own writes"
            );
            Ok::<_, TestError>(())
        })
        .await;
    assert_eq!(kept, Ok(()));
    assert_eq!(store.get(&TOTALS, b"y").expect("read"), Some(1));
}

#[tokio::test]
async fn a_step_runs_even_if_its_caller_stops_waiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store
        .inject_stall(Duration::from_millis(200))
        .expect("stall");
    let write = store.write(|w| {
        w.put(&TOTALS, b"cancelled", &1)?;
        Ok::<_, TestError>(())
    });
    // Dropped before the commit: the step still happens, whole.
    let _ = tokio::time::timeout(Duration::from_millis(20), write).await;
    store
        .write(|_| Ok::<_, TestError>(()))
        .await
        .expect("barrier");
    assert_eq!(store.get(&TOTALS, b"cancelled").expect("read"), Some(1));
}

#[tokio::test]
async fn s4_a_stalled_writer_is_reported_unhealthy_then_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    assert_eq!(store.health(), Ok(()));
    store.inject_stall(Duration::from_secs(3)).expect("stall");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let sick = store.health().expect_err("stalled store is unhealthy");
    assert!(sick.contains("in progress"), "{sick}");
    store
        .write(|_| Ok::<_, TestError>(()))
        .await
        .expect("after the stall");
    assert_eq!(store.health(), Ok(()));
}

#[test]
fn scan_merges_a_steps_own_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store
        .write_blocking(|w| {
            w.put(&TOTALS, b"a1", &1)?;
            w.put(&TOTALS, b"a2", &2)?;
            Ok::<_, TestError>(())
        })
        .expect("seed");
    store
        .write_blocking(|w| {
            w.remove(&TOTALS, b"a1")?;
            w.put(&TOTALS, b"a3", &3)?;
            let seen: Vec<u128> = w
                .scan(&TOTALS, b"a".to_vec()..b"b".to_vec())?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            assert_eq!(seen, vec![2, 3]);
            Ok::<_, TestError>(())
        })
        .expect("scan");
}

#[test]
fn first_and_bounded_scans_see_what_a_step_wrote_and_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store
        .write_blocking(|w| {
            w.put(&TOTALS, b"a2", &2)?;
            w.put(&TOTALS, b"a4", &4)?;
            w.put(&TOTALS, b"b1", &9)?;
            Ok::<_, TestError>(())
        })
        .expect("seed");
    store
        .write_blocking(|w| {
            let range = || b"a".to_vec()..b"b".to_vec();
            assert_eq!(w.first(&TOTALS, range())?.map(|(_, v)| v), Some(2));
            // Removed in this step: the next stored entry, or a written one before it.
            w.remove(&TOTALS, b"a2")?;
            assert_eq!(w.first(&TOTALS, range())?.map(|(_, v)| v), Some(4));
            w.put(&TOTALS, b"a3", &3)?;
            assert_eq!(w.first(&TOTALS, range())?.map(|(_, v)| v), Some(3));
            w.put(&TOTALS, b"a1", &1)?;
            assert_eq!(w.first(&TOTALS, range())?.map(|(_, v)| v), Some(1));
            // Nothing of another range, written or stored, leaks in.
            assert_eq!(
                w.first(&TOTALS, b"c".to_vec()..b"d".to_vec())?
                    .map(|(_, v)| v),
                None
            );
            assert_eq!(
                w.first(&TOTALS, b"a5".to_vec()..=b"b1".to_vec())?
                    .map(|(_, v)| v),
                Some(9)
            );
            Ok::<_, TestError>(())
        })
        .expect("first");
    let firsts = store
        .read(|r| r.scan_first(&TOTALS, b"a".to_vec()..b"c".to_vec(), 2))
        .expect("read");
    let values: Vec<u128> = firsts.into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, vec![1, 3], "the first two, in key order");
}

#[test]
fn records_survive_reopen_and_other_versions_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        store
            .write_blocking(|w| {
                w.put(
                    &ENTRIES,
                    b"r",
                    &Entry {
                        digest: "d".into(),
                        count: 2,
                    },
                )
            })
            .expect("put");
        let raw: Table<crate::Bytes> = Table::new("entries", "entry");
        store
            .write_blocking(|w| {
                w.put(
                    &raw,
                    b"future",
                    &br#"{"v":9,"digest":"d","count":1}"#.to_vec(),
                )
            })
            .expect("put raw");
    }
    // The writer thread lets go of the file once every handle is dropped.
    let store = loop {
        match Store::open(dir.path(), &[ENTRIES.name(), TOTALS.name()]) {
            Ok(s) => break s,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert_eq!(
        store.get(&ENTRIES, b"r").expect("read"),
        Some(Entry {
            digest: "d".into(),
            count: 2
        })
    );
    let err = store
        .get(&ENTRIES, b"future")
        .expect_err("version 9 refused");
    assert!(err.to_string().contains("version 9"), "{err}");
}

#[test]
fn an_earlier_releases_sled_dir_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sled = dir.path().join("store");
    std::fs::create_dir(&sled).expect("mkdir");
    std::fs::write(sled.join("conf"), b"segment_size: 524288").expect("write");
    let err = Store::open(dir.path(), &[ENTRIES.name()]).expect_err("refused");
    assert!(err.to_string().contains("sled"), "{err}");
    assert!(!dir.path().join(crate::STORE_FILE).exists());
    assert_eq!(
        std::fs::read(sled.join("conf")).expect("kept"),
        b"segment_size: 524288"
    );
}

#[test]
fn s1_a_store_creation_cut_short_leaves_no_unopenable_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    // What a daemon killed mid-creation leaves: a partial file under the
    // temporary name (never under store.redb itself).
    std::fs::write(dir.path().join("store.redb.creating"), [0u8; 100]).expect("write");
    let store = open(dir.path());
    assert!(dir.path().join(crate::STORE_FILE).is_file());
    assert!(!dir.path().join("store.redb.creating").exists());
    drop(store);
    // And an existing store is opened, never re-created.
    let store = open(dir.path());
    drop(store);
}

#[tokio::test]
async fn a_full_queue_is_refused_as_busy_not_waited_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    store
        .inject_stall(Duration::from_millis(500))
        .expect("stall");
    let mut busy = 0;
    let mut pending = Vec::new();
    for _ in 0..(crate::QUEUE_CAPACITY + crate::MAX_BATCH + 100) {
        match store.inner.submit(|_| Ok::<_, StoreError>(()), true) {
            Ok(rx) => pending.push(rx),
            Err(StoreError::Busy { .. }) => busy += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(busy >= 90, "only {busy} refused");
    for rx in pending {
        rx.await.expect("delivered").expect("committed");
    }
}

/// Mounts a small tmpfs for the disk-full test; `None` where that is not allowed.
fn small_disk(dir: &std::path::Path) -> Option<()> {
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(())
}

#[tokio::test]
async fn s3_a_full_disk_fails_closed_keeps_what_was_committed_and_recovers_in_process() {
    let mnt = tempfile::tempdir().expect("tempdir");
    if small_disk(mnt.path()).is_none() {
        eprintln!("cannot mount a tmpfs here (not root?); the disk-full test needs one");
        return;
    }
    let data = mnt.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let store = Store::open(&data, &[ENTRIES.name(), TOTALS.name()]).expect("open");
    let filler = mnt.path().join("filler");
    std::fs::write(&filler, vec![0u8; 2 * 1024 * 1024]).expect("filler");
    let (mut ok, mut refused) = (0u32, 0u32);
    for i in 0..2000u32 {
        let step = store
            .write(move |w| {
                w.put(
                    &ENTRIES,
                    format!("id-{i}"),
                    &Entry {
                        digest: "d".repeat(2048),
                        count: i,
                    },
                )?;
                Ok::<_, TestError>(())
            })
            .await;
        match step {
            Ok(()) => ok += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 0, "the disk never filled");
    assert!(store.health().is_err(), "a failing store reports it");
    // Every write that was acknowledged is there; nothing else is.
    assert_eq!(store.all(&ENTRIES).expect("read").len() as u32, ok);
    std::fs::remove_file(&filler).expect("free space");
    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let step = store
            .write(|w| Ok::<_, TestError>(w.put(&TOTALS, b"after", &1)?))
            .await;
        if step.is_ok() {
            recovered = true;
            break;
        }
    }
    assert!(
        recovered,
        "the store did not recover once the disk had room"
    );
    assert_eq!(store.health(), Ok(()));
    drop(store);
    let _ = std::process::Command::new("umount")
        .arg(mnt.path())
        .status();
}

#[tokio::test]
async fn the_commit_observer_sees_every_commit_with_its_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    store.observe_commits(Arc::new(move |latency, steps| {
        sink.lock().expect("lock").push((latency, steps));
    }));
    for i in 0..3u128 {
        store
            .write(move |w| {
                w.put(&TOTALS, b"all", &i)?;
                Ok::<_, TestError>(())
            })
            .await
            .expect("write");
    }
    // A refused step alone commits nothing new, and idle heartbeats are not commits.
    let refused = store
        .write(|_| Err::<(), _>(TestError::Refused))
        .await
        .expect_err("refused");
    assert_eq!(refused, TestError::Refused);
    let seen = seen.lock().expect("lock").clone();
    let stats = store.stats();
    assert_eq!(seen.len() as u64, stats.commits, "{seen:?} vs {stats:?}");
    assert_eq!(seen.iter().map(|(_, s)| s).sum::<u64>(), stats.steps);
    assert!(seen.iter().all(|(l, _)| *l < Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_write_is_visible_at_once_and_durable_after_its_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let store = open(dir.path());
        let seen = hooks.clone();
        store.before_durable_commit(Arc::new(move || {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }));
        let mut promises = Vec::new();
        for i in 0..3u32 {
            let ((), durable) = store
                .write_deferred(move |w| {
                    w.put(&TOTALS, format!("k{i}"), &u128::from(i))?;
                    Ok::<_, TestError>(())
                })
                .await
                .expect("deferred write");
            // Readers see it before it is durable.
            assert_eq!(
                store.get(&TOTALS, format!("k{i}")).expect("read"),
                Some(u128::from(i))
            );
            promises.push(durable);
        }
        for d in promises {
            d.wait().await.expect("durable");
        }
        assert!(hooks.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        // A durable write after deferred ones makes them durable too; a wait
        // on an already durable commit returns at once.
        let ((), late) = store
            .write_deferred(|w| {
                w.put(&TOTALS, "late", &7u128)?;
                Ok::<_, TestError>(())
            })
            .await
            .expect("deferred");
        store
            .write(|w| {
                w.put(&TOTALS, "durable", &8u128)?;
                Ok::<_, TestError>(())
            })
            .await
            .expect("durable write");
        late.wait().await.expect("already durable");
    }
    let store = open(dir.path());
    for (k, v) in [
        ("k0", 0u128),
        ("k1", 1),
        ("k2", 2),
        ("late", 7),
        ("durable", 8),
    ] {
        assert_eq!(store.get(&TOTALS, k).expect("read"), Some(v), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_fails_the_durable_commit_and_the_deferred_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.before_durable_commit(Arc::new(|| Err("audit log unwritable".into())));
    let ((), durable) = store
        .write_deferred(|w| {
            w.put(&TOTALS, "k", &1u128)?;
            Ok::<_, TestError>(())
        })
        .await
        .expect("deferred commit needs no hook");
    let err = tokio::time::timeout(Duration::from_secs(10), durable.wait())
        .await
        .expect("the wait ends")
        .expect_err("not durable");
    assert!(err.to_string().contains("audit log unwritable"), "{err}");
    let err = store
        .write(|w| {
            w.put(&TOTALS, "j", &1u128)?;
            Ok::<_, TestError>(())
        })
        .await
        .expect_err("a durable write is refused");
    assert!(
        matches!(err, TestError::Store(ref m) if m.contains("audit log unwritable")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_makes_its_deferred_commits_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        let ((), _not_awaited) = store
            .write_deferred(|w| {
                w.put(&TOTALS, "k", &5u128)?;
                Ok::<_, TestError>(())
            })
            .await
            .expect("deferred");
    }
    assert_eq!(open(dir.path()).get(&TOTALS, "k").expect("read"), Some(5));
}
