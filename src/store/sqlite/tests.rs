use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use super::admin::OLDEST_PENDING_SQL;
use super::claim::{
    ATTACH_IMAGES_SQL, BATCH_IMAGES_SQL, CREATE_BATCH_SQL, LEASE_BATCH_SQL, RECLAIMABLE_BATCH_SQL,
    WAITING_PARTITIONS_SQL,
};
use super::migrate::{Migration, apply_migrations, migrations};
use super::*;
use crate::domain::{Partition, ScanTarget};
use crate::store::DeliveryKey;
use crate::store::conformance::{self, POLICY, partition, receipt, target};

pub(super) const T0: Millis = 1_800_000_000_000;

pub(super) fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("bridge.db")
}

pub(super) async fn open_migrated(path: &Path, pool_size: usize) -> SqliteStore {
    let store = SqliteStore::open(path, pool_size).await.expect("open");
    store.migrate().await.expect("migrate");
    store
}

fn stored(accepted: usize, duplicates: usize) -> Enqueued {
    Enqueued::Stored(EnqueueCounts {
        accepted,
        duplicates,
    })
}

fn tags(batch: &ClaimedBatch) -> Vec<String> {
    batch.images.iter().map(|i| i.image.tag.clone()).collect()
}

#[tokio::test]
async fn sqlite_store_meets_the_store_contract() {
    // Every case gets a fresh database, in a directory `open` has to create.
    let dirs = Mutex::new(Vec::new());
    conformance::run_all(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("data/queue/bridge.db"), 4)
            .await
            .expect("open");
        dirs.lock().expect("dirs").push(dir);
        store
    })
    .await;
}

#[tokio::test]
async fn connections_run_in_wal_with_full_sync_and_foreign_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_migrated(&db_path(&dir), 2).await;
    let settings = store
        .run("pragmas", |conn| {
            Ok((
                conn.pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0))?,
                conn.pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))?,
                conn.pragma_query_value(None, "foreign_keys", |r| r.get::<_, i64>(0))?,
                conn.pragma_query_value(None, "busy_timeout", |r| r.get::<_, i64>(0))?,
            ))
        })
        .await
        .expect("pragmas");
    // synchronous: 2 is FULL.
    assert_eq!(settings, ("wal".to_string(), 2, 1, 5_000));
}

#[tokio::test]
async fn data_survives_closing_and_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let key = DeliveryKey {
        source: "swr-ee".into(),
        id: "msg-1".into(),
    };
    let cause = DeadLetterCause {
        http_status: Some(400),
        error_code: Some("HSS.1001".into()),
        error_msg: "invalid image".into(),
        request_id: Some("req-7".into()),
    };

    let store = open_migrated(&path, 2).await;
    let first = store
        .enqueue(
            Some(&key),
            &[target("i1", "api", "v1"), target("i1", "api", "v2")],
            T0,
        )
        .await
        .expect("enqueue");
    assert_eq!(first, stored(2, 0));
    store
        .enqueue(None, &[target("i2", "web", "v1")], T0 + 10)
        .await
        .expect("enqueue");
    store
        .enqueue(None, &[target("i3", "db", "v1")], T0 + 20)
        .await
        .expect("enqueue");
    let flying = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("i1 is due");
    assert_eq!(flying.partition, partition("i1"));
    let doomed = store
        .claim_batch("w1", T0 + 2_010, &POLICY)
        .await
        .expect("claim")
        .expect("i2 is due");
    store
        .dead_letter(&doomed, &cause, T0 + 2_100)
        .await
        .expect("dead letter");
    let pending_before = store.pending(100).await.expect("pending");
    assert_eq!(pending_before.len(), 3);
    store.close();
    drop(store);

    let store = open_migrated(&path, 2).await;
    assert_eq!(store.pending(100).await.expect("pending"), pending_before);
    assert_eq!(
        store.stats().await.expect("stats"),
        StoreStats {
            pending_images: 3,
            oldest_enqueued_at: Some(T0),
            batches_in_flight: 1,
            dead_letters: 1,
        }
    );
    assert_eq!(
        store
            .enqueue(Some(&key), &[target("i1", "api", "v9")], T0 + 3_000)
            .await
            .expect("enqueue"),
        Enqueued::DuplicateDelivery
    );
    let letters = store.dead_letters(10).await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].cause, cause);
    assert_eq!(letters[0].images, doomed.images);
    assert_eq!(letters[0].partition, partition("i2"));
    // The i3 image is due, but first the lease taken before the restart
    // still holds, and then it is taken over.
    let next = store
        .claim_batch("w2", T0 + 3_000, &POLICY)
        .await
        .expect("claim")
        .expect("i3 is due");
    assert_eq!(next.partition, partition("i3"));
    assert_eq!(
        store
            .claim_batch("w2", flying.lease_until - 1, &POLICY)
            .await
            .expect("claim"),
        None
    );
    let resumed = store
        .claim_batch("w2", flying.lease_until, &POLICY)
        .await
        .expect("claim")
        .expect("expired lease");
    assert_eq!(resumed.id, flying.id);
    assert_eq!(resumed.attempt, 2);
    assert_eq!(resumed.images, flying.images);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_never_lease_a_batch_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    // Two "processes" start together on a fresh file.
    let (a, b) = tokio::join!(SqliteStore::open(&path, 4), SqliteStore::open(&path, 4));
    let (a, b) = (Arc::new(a.expect("open a")), Arc::new(b.expect("open b")));
    let (migrated_a, migrated_b) = tokio::join!(a.migrate(), b.migrate());
    migrated_a.expect("migrate a");
    migrated_b.expect("migrate b");

    let policy = BatchPolicy {
        window_ms: 2_000,
        max_images: 10,
        lease_ms: 60_000,
    };
    let instances = 6;
    let per_instance = 95;
    for instance in 0..instances {
        let targets: Vec<ScanTarget> = (0..per_instance)
            .map(|n| target(&format!("i{instance}"), "api", &format!("v{n}")))
            .collect();
        let writer = if instance % 2 == 0 { &a } else { &b };
        assert_eq!(
            writer.enqueue(None, &targets, T0).await.expect("enqueue"),
            stored(per_instance, 0)
        );
    }

    let now = T0 + policy.window_ms;
    let mut workers = Vec::new();
    for worker in 0..8 {
        let store = if worker % 2 == 0 {
            a.clone()
        } else {
            b.clone()
        };
        workers.push(tokio::spawn(async move {
            let owner = format!("worker-{worker}");
            let mut claimed = Vec::new();
            while let Some(batch) = store
                .claim_batch(&owner, now, &policy)
                .await
                .expect("claim")
            {
                claimed.push(batch);
            }
            claimed
        }));
    }
    let mut batches = Vec::new();
    for worker in workers {
        batches.extend(worker.await.expect("worker"));
    }

    // 6 partitions of 95 images in batches of 10: 6 × 10 batches.
    assert_eq!(batches.len(), 60);
    let ids: HashSet<i64> = batches.iter().map(|b| b.id).collect();
    assert_eq!(ids.len(), batches.len(), "a batch was leased twice");
    assert!(batches.iter().all(|b| b.attempt == 1));
    let images: Vec<(Partition, String)> = batches
        .iter()
        .flat_map(|b| {
            b.images
                .iter()
                .map(|i| (b.partition.clone(), i.image.tag.clone()))
        })
        .collect();
    let distinct: HashSet<&(Partition, String)> = images.iter().collect();
    assert_eq!(images.len(), instances * per_instance);
    assert_eq!(distinct.len(), images.len(), "an image travelled twice");
    // While the leases hold, neither process finds anything to claim.
    assert_eq!(
        a.claim_batch("late", now + 1, &policy)
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        b.claim_batch("late", now + 1, &policy)
            .await
            .expect("claim"),
        None
    );
}

#[tokio::test]
async fn a_claim_over_ten_thousand_rows_takes_the_oldest_hundred() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_migrated(&db_path(&dir), 2).await;
    // 100 webhooks of 100 images (50 for i1, 50 for i2), stored in a
    // scrambled order so that row ids do not follow enqueue times.
    for slot in 0..100 {
        let webhook = (slot * 37) % 100;
        let targets: Vec<ScanTarget> = (0..100)
            .map(|n| {
                let instance = if n % 2 == 0 { "i1" } else { "i2" };
                target(instance, "api", &format!("w{webhook:02}-{n:02}"))
            })
            .collect();
        let now = T0 + webhook * 10;
        assert_eq!(
            store.enqueue(None, &targets, now).await.expect("enqueue"),
            stored(100, 0)
        );
    }
    // Stored last, but the oldest image of all: i2 goes first.
    store
        .enqueue(None, &[target("i2", "api", "early")], T0 - 5)
        .await
        .expect("enqueue");
    assert_eq!(store.stats().await.expect("stats").pending_images, 10_001);

    let policy = BatchPolicy {
        window_ms: 2_000,
        max_images: 100,
        lease_ms: 30_000,
    };
    let now = T0 + 10_000;
    let first = store
        .claim_batch("w1", now, &policy)
        .await
        .expect("claim")
        .expect("due");
    assert_eq!(first.partition, partition("i2"));
    let mut expected = vec!["early".to_string()];
    expected.extend((0..50).map(|k| format!("w00-{:02}", 2 * k + 1)));
    expected.extend((0..49).map(|k| format!("w01-{:02}", 2 * k + 1)));
    assert_eq!(tags(&first), expected);

    let second = store
        .claim_batch("w1", now, &policy)
        .await
        .expect("claim")
        .expect("due");
    assert_eq!(second.partition, partition("i1"));
    let mut expected: Vec<String> = (0..50).map(|k| format!("w00-{:02}", 2 * k)).collect();
    expected.extend((0..50).map(|k| format!("w01-{:02}", 2 * k)));
    assert_eq!(tags(&second), expected);

    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.pending_images, 10_001);
    assert_eq!(stats.batches_in_flight, 2);
}

/// Plan lines that walk a whole table instead of seeking in an index, or
/// that sort rows the index should already deliver in order.
fn costly_plan_lines(plan: &[String]) -> Vec<String> {
    // Scanning a CTE's few rows (one per partition) is fine.
    const CTE_SCANS: [&str; 2] = ["SCAN waiting", "SCAN w"];
    plan.iter()
        .filter(|line| {
            (line.starts_with("SCAN") && !CTE_SCANS.contains(&line.as_str()))
                || line.contains("TEMP B-TREE")
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn claim_and_due_queries_seek_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_migrated(&db_path(&dir), 1).await;
    let targets: Vec<ScanTarget> = (0..500)
        .map(|n| target(&format!("i{}", n % 5), "api", &format!("v{n}")))
        .collect();
    store.enqueue(None, &targets, T0).await.expect("enqueue");
    for sql in [
        WAITING_PARTITIONS_SQL,
        RECLAIMABLE_BATCH_SQL,
        CREATE_BATCH_SQL,
        ATTACH_IMAGES_SQL,
        LEASE_BATCH_SQL,
        BATCH_IMAGES_SQL,
        "SELECT MIN(next_attempt_at) FROM batches",
        OLDEST_PENDING_SQL,
        "DELETE FROM pending_images WHERE batch_id = ?1",
        "DELETE FROM deliveries WHERE seen_at < ?1",
    ] {
        let plan = store
            .run("explain", move |conn| {
                let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let nulls = std::iter::repeat_n(rusqlite::types::Null, statement.parameter_count());
                statement
                    .query_map(rusqlite::params_from_iter(nulls), |row| {
                        row.get::<_, String>(3)
                    })?
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .await
            .expect("explain");
        assert!(!plan.is_empty(), "no plan for {sql}");
        assert_eq!(
            costly_plan_lines(&plan),
            Vec::<String>::new(),
            "plan of {sql}: {plan:#?}"
        );
    }
}

#[test]
fn migrations_match_the_files_on_disk() {
    let on_disk = crate::store::migrations::files_on_disk("sqlite");
    let listed: Vec<String> = migrations()
        .iter()
        .map(|m| format!("{:04}_{}.sql", m.version, m.name))
        .collect();
    assert_eq!(listed, on_disk);
    let versions: Vec<i64> = migrations().iter().map(|m| m.version).collect();
    let expected: Vec<i64> = (1..=migrations().len() as i64).collect();
    assert_eq!(versions, expected, "versions are 1, 2, 3, … without gaps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_each_step_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let stores: Vec<SqliteStore> =
        futures_util::future::join_all((0..4).map(|_| SqliteStore::open(&path, 2)))
            .await
            .into_iter()
            .map(|store| store.expect("open"))
            .collect();
    let results = futures_util::future::join_all(stores.iter().map(|s| s.migrate())).await;
    for result in results {
        result.expect("migrate");
    }
    let recorded = stores[0]
        .run("versions", |conn| {
            conn.prepare("SELECT version, name FROM schema_migrations ORDER BY version")?
                .query_map([], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
        .expect("versions");
    let expected: Vec<(i64, String)> = migrations()
        .iter()
        .map(|m| (m.version, m.name.to_string()))
        .collect();
    assert_eq!(recorded, expected);
}

#[tokio::test]
async fn a_schema_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_migrated(&db_path(&dir), 1).await;
    store
        .run("forge", |conn| {
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)",
                [],
            )
        })
        .await
        .expect("forge a newer migration");
    let err = store.migrate().await.expect_err("newer schema");
    let StoreError::Migration(message) = err else {
        panic!("expected a migration error, got {err:?}");
    };
    assert!(message.contains("0099_future"), "{message}");
    assert!(
        message.contains(&db_path(&dir).display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn a_failing_migration_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&db_path(&dir), 1).await.expect("open");
    let broken = [
        migrations()[0].clone(),
        Migration {
            version: 2,
            name: "broken",
            sql: "CREATE TABLE extra (id INTEGER); SELECT * FROM no_such_table;".to_string(),
        },
    ];
    let failure = store
        .run_raw("migrate", move |conn| apply_migrations(conn, &broken, T0))
        .await
        .expect("reach the database")
        .expect_err("the second step fails");
    assert!(
        failure
            .to_string()
            .starts_with("migration 0002_broken failed"),
        "{failure}"
    );
    // The whole run was one transaction: not even the first step stayed.
    let tables: Vec<String> = store
        .run("tables", |conn| {
            conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
                .query_map([], |row| row.get(0))?
                .collect()
        })
        .await
        .expect("tables");
    assert_eq!(tables, Vec::<String>::new());
}

#[tokio::test]
async fn a_path_that_cannot_hold_a_database_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("write");
    let path = blocker.join("bridge.db");
    let err = SqliteStore::open(&path, 1)
        .await
        .expect_err("parent is a file");
    let StoreError::Unavailable(message) = err else {
        panic!("expected unavailable, got {err:?}");
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    std::fs::write(&path, vec![b'x'; 4096]).expect("write");
    let err = SqliteStore::open(&path, 1).await.expect_err("garbage file");
    let StoreError::Unavailable(message) = err else {
        panic!("expected unavailable, got {err:?}");
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not a database"), "{message}");
}

/// Holds the store's write turn while `jobs` callers queue, then lets go: the
/// writer, waiting for the turn, then commits all of them in one transaction.
async fn enqueue_as_one_group(
    store: &Arc<SqliteStore>,
    jobs: Vec<(Option<DeliveryKey>, Vec<ScanTarget>)>,
) -> Vec<Result<Enqueued, StoreError>> {
    let count = jobs.len();
    // Held on a thread of its own: a std mutex guard must not live across an await.
    let turn = Arc::clone(&store.write_turn);
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, holding) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _turn = take_turn(&turn);
        held.send(()).expect("test waits");
        let _ = released.recv();
    });
    holding.recv().expect("turn held");
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|(delivery, targets)| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.enqueue(delivery.as_ref(), &targets, T0).await })
        })
        .collect();
    while store.writer.queued() < count {
        tokio::task::yield_now().await;
    }
    release.send(()).expect("holder waits");
    holder.join().expect("holder");
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("enqueue task"));
    }
    outcomes
}

#[tokio::test]
async fn one_group_commit_answers_each_webhook_with_its_own_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = Arc::new(open_migrated(&path, 2).await);
    let key = |id: &str| DeliveryKey {
        source: "harbor-ce".into(),
        id: id.into(),
    };
    let outcomes = enqueue_as_one_group(
        &store,
        vec![
            (
                Some(key("m1")),
                vec![target("i1", "api", "v1"), target("i1", "api", "v2")],
            ),
            // Same image as the first webhook, in the same transaction: a duplicate.
            (None, vec![target("i1", "api", "v1")]),
            // A redelivery inside the same group: answered as such.
            (Some(key("m1")), vec![target("i1", "api", "v3")]),
            (Some(key("m2")), vec![target("i2", "web", "v1")]),
        ],
    )
    .await;
    let outcomes: Vec<Enqueued> = outcomes.into_iter().map(|o| o.expect("stored")).collect();
    assert_eq!(
        outcomes,
        vec![
            stored(2, 0),
            stored(0, 1),
            Enqueued::DuplicateDelivery,
            stored(1, 0)
        ]
    );
    store.close();
    drop(store);

    // Durable: another store on the file sees exactly those rows.
    let reopened = open_migrated(&path, 1).await;
    let mut pending: Vec<String> = reopened
        .pending(10)
        .await
        .expect("pending")
        .into_iter()
        .map(|p| p.image.to_string())
        .collect();
    pending.sort();
    assert_eq!(
        pending,
        vec!["team-a/api:v1", "team-a/api:v2", "team-a/web:v1"]
    );
    assert_eq!(
        reopened
            .enqueue(Some(&key("m2")), &[target("i9", "x", "v1")], T0)
            .await
            .expect("redelivery"),
        Enqueued::DuplicateDelivery
    );
}

#[tokio::test]
async fn a_failing_webhook_rolls_back_alone_in_its_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_migrated(&db_path(&dir), 2).await);
    store
        .run("poison", |conn| {
            conn.execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON pending_images
                 WHEN NEW.tag = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned tag'); END;",
            )
        })
        .await
        .expect("trigger");
    let key = DeliveryKey {
        source: "harbor-ce".into(),
        id: "bad".into(),
    };
    let outcomes = enqueue_as_one_group(
        &store,
        vec![
            (None, vec![target("i1", "api", "v1")]),
            // Its first image and its delivery id are rolled back with it.
            (
                Some(key.clone()),
                vec![target("i1", "api", "v2"), target("i1", "api", "poison")],
            ),
            (None, vec![target("i1", "api", "v3")]),
        ],
    )
    .await;
    assert_eq!(outcomes[0].as_ref().expect("first"), &stored(1, 0));
    assert!(
        matches!(&outcomes[1], Err(StoreError::Query(m)) if m.starts_with("enqueue: ") && m.contains("poisoned tag")),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2].as_ref().expect("third"), &stored(1, 0));
    let mut tags: Vec<String> = store
        .pending(10)
        .await
        .expect("pending")
        .into_iter()
        .map(|p| p.image.tag)
        .collect();
    tags.sort();
    assert_eq!(tags, vec!["v1", "v3"]);
    // The failed webhook's id was not remembered: its retry is stored.
    assert_eq!(
        store
            .enqueue(Some(&key), &[target("i1", "api", "v2")], T0)
            .await
            .expect("retry"),
        stored(1, 0)
    );
}

/// The batcher's drain awaits a claim while settle futures of the same task
/// wait unpolled: a write that held an async lock across its `.await` would
/// block the claim for good.
#[tokio::test]
async fn a_claim_completes_while_a_settle_of_the_same_task_is_not_polled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_migrated(&db_path(&dir), 2).await;
    store
        .enqueue(
            None,
            &[target("i1", "api", "v1"), target("i2", "web", "v1")],
            T0,
        )
        .await
        .expect("enqueue");
    let policy = POLICY.flush_now();
    let first = store
        .claim_batch("w", T0, &policy)
        .await
        .expect("claim")
        .expect("a batch");
    let receipt = receipt();
    let mut settle = std::pin::pin!(store.complete(&first, &receipt, T0));
    // Started, then left unpolled while the same task claims again.
    assert!(futures_util::poll!(&mut settle).is_pending());
    let second = tokio::time::timeout(Duration::from_secs(10), store.claim_batch("w", T0, &policy))
        .await
        .expect("the claim is not blocked by the unpolled settle")
        .expect("claim")
        .expect("a second batch");
    assert_ne!(second.partition, first.partition);
    settle.await.expect("complete");
}

#[tokio::test]
async fn concurrent_webhooks_are_all_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_migrated(&db_path(&dir), 4).await);
    // 200 webhooks at once, each naming its own image and a shared one.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let targets = [
                    target("i1", "api", &format!("v{i}")),
                    target("i1", "api", "latest"),
                ];
                store.enqueue(None, &targets, T0 + i).await
            })
        })
        .collect();
    let (mut accepted, mut duplicates) = (0, 0);
    for task in tasks {
        match task.await.expect("task").expect("stored") {
            Enqueued::Stored(counts) => {
                accepted += counts.accepted;
                duplicates += counts.duplicates;
            }
            Enqueued::DuplicateDelivery => panic!("no delivery ids were given"),
        }
    }
    assert_eq!((accepted, duplicates), (201, 199));
    assert_eq!(store.stats().await.expect("stats").pending_images, 201);
}

#[tokio::test]
async fn a_write_lock_held_too_long_is_unavailable_then_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let patience = Patience {
        busy: Duration::from_millis(50),
        pool: Duration::from_secs(5),
    };
    let store = SqliteStore::open_with(&path, 1, patience)
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    // Another process holds the write lock.
    let other = Connection::open(&path).expect("other connection");
    other.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let err = store
        .enqueue(None, &[target("i1", "api", "v1")], T0)
        .await
        .expect_err("locked");
    let StoreError::Unavailable(message) = err else {
        panic!("expected unavailable, got {err:?}");
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("enqueue"), "{message}");
    // Reads still work beside the writer (WAL).
    assert_eq!(store.stats().await.expect("stats").pending_images, 0);
    other.execute_batch("ROLLBACK").expect("unlock");
    assert_eq!(
        store
            .enqueue(None, &[target("i1", "api", "v1")], T0)
            .await
            .expect("enqueue"),
        stored(1, 0)
    );
}

#[tokio::test]
async fn an_exhausted_pool_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let patience = Patience {
        busy: Duration::from_secs(5),
        pool: Duration::from_millis(50),
    };
    let store = SqliteStore::open_with(&db_path(&dir), 1, patience)
        .await
        .expect("open");
    let held = store.pool.get().await.expect("the only connection");
    let err = store.ping().await.expect_err("no free connection");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("timed out waiting for a connection")),
        "{err:?}"
    );
    drop(held);
    store
        .ping()
        .await
        .expect("ping once the connection is back");
    store.close();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_panic_inside_the_database_task_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_migrated(&db_path(&dir), 1).await;
    let err = store
        .run("explode", |_conn| -> rusqlite::Result<()> {
            panic!("boom")
        })
        .await
        .expect_err("panicked");
    assert!(
        matches!(&err, StoreError::Query(m) if m == "explode: the database task panicked: boom"),
        "{err:?}"
    );
    // The poisoned connection is discarded; the store goes on.
    store.ping().await.expect("ping");
    assert_eq!(
        store
            .enqueue(None, &[target("i1", "api", "v1")], T0)
            .await
            .expect("enqueue"),
        stored(1, 0)
    );
}

#[tokio::test]
async fn a_broken_statement_is_a_query_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&db_path(&dir), 1).await.expect("open");
    // Not migrated yet: the tables are missing.
    let err = store.stats().await.expect_err("no schema");
    assert!(
        matches!(&err, StoreError::Query(m) if m.starts_with("stats: ") && m.contains("no such table")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_stale_lease_of_the_same_owner_cannot_release_the_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_migrated(&db_path(&dir), 1).await;
    store
        .enqueue(None, &[target("i1", "api", "v1")], T0)
        .await
        .expect("enqueue");
    let first = store
        .claim_batch("replica-1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("due");
    // The same replica takes it over after its own lease ran out.
    let second = store
        .claim_batch("replica-1", first.lease_until, &POLICY)
        .await
        .expect("claim")
        .expect("expired");
    assert_eq!((second.id, second.attempt), (first.id, 2));
    store
        .release_for_retry(
            &first,
            first.lease_until + 10,
            &RetryCause::reason("stale"),
            T0,
        )
        .await
        .expect("release");
    assert_eq!(
        store
            .next_due(first.lease_until + 20, &POLICY)
            .await
            .expect("next_due"),
        Some(second.lease_until),
        "the stale release changed nothing"
    );
}

#[tokio::test]
async fn a_full_partition_is_due_now_and_the_next_window_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_migrated(&db_path(&dir), 1).await;
    store
        .enqueue(None, &[target("i1", "api", "v1")], T0)
        .await
        .expect("enqueue");
    assert_eq!(
        store.next_due(T0 + 1, &POLICY).await.expect("next_due"),
        Some(T0 + POLICY.window_ms)
    );
    store
        .enqueue(
            None,
            &[
                target("i2", "api", "v1"),
                target("i2", "api", "v2"),
                target("i2", "api", "v3"),
            ],
            T0 + 100,
        )
        .await
        .expect("enqueue");
    assert_eq!(
        store.next_due(T0 + 150, &POLICY).await.expect("next_due"),
        Some(T0 + 150)
    );
}

#[tokio::test]
async fn closing_commits_what_is_queued_and_refuses_later_enqueues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = Arc::new(open_migrated(&path, 2).await);
    // The writer waits for a held write turn while two webhooks queue; the
    // store closes before it gets the turn.
    let turn = Arc::clone(&store.write_turn);
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, holding) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _turn = take_turn(&turn);
        held.send(()).expect("test waits");
        let _ = released.recv();
    });
    holding.recv().expect("turn held");
    let tasks: Vec<_> = ["v1", "v2"]
        .into_iter()
        .map(|tag| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.enqueue(None, &[target("i1", "api", tag)], T0).await })
        })
        .collect();
    while store.writer.queued() < 2 {
        tokio::task::yield_now().await;
    }
    store.close();
    let refused = store
        .enqueue(None, &[target("i1", "api", "v3")], T0)
        .await
        .expect_err("closed");
    assert!(
        matches!(&refused, StoreError::Unavailable(m) if m.contains("closed")),
        "{refused:?}"
    );
    release.send(()).expect("holder waits");
    holder.join().expect("holder");
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("committed"), stored(1, 0));
    }
    drop(store);
    let reopened = open_migrated(&path, 1).await;
    assert_eq!(reopened.pending(10).await.expect("pending").len(), 2);
}
