//! The SQLite history file: moves, the cursor protocol, ids, the upgrade
//! from a queue file that held its own indexed history, and reads racing a
//! move.

use rusqlite::Connection;

use super::connection::configure_connection;
use super::history::queue_records;
use super::migrate::{apply_migrations, migrations};
use super::tests::{T0, db_path, open_migrated};
use super::*;
use crate::domain::ScanTarget;
use crate::store::conformance::{POLICY, receipt, target};
use crate::store::history::{EventKind, HISTORY_LIMIT};

/// Rows where they are now: (recent rows in the queue file, rows in the
/// history file, the history file's cursor).
fn places(queue: &Path) -> (i64, i64, i64) {
    let conn = Connection::open(queue).expect("open");
    conn.execute(
        "ATTACH DATABASE ?1 AS kept",
        [history_path(queue).to_string_lossy()],
    )
    .expect("attach");
    conn.query_row(
        "SELECT (SELECT count(*) FROM recent_history), (SELECT count(*) FROM kept.image_history),
                (SELECT moved_through FROM kept.history_cursor)",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
    .expect("count")
}

fn subject(image: &str) -> HistorySubject {
    image.parse().expect("a well-formed subject")
}

async fn kinds(store: &SqliteStore, image: &str) -> Vec<EventKind> {
    store
        .history(&subject(image), HISTORY_LIMIT)
        .await
        .expect("history")
        .iter()
        .map(|event| event.event)
        .collect()
}

const SCANNED: [EventKind; 3] = [EventKind::Accepted, EventKind::Sent, EventKind::Scanned];

/// Enqueues `tags` at `now` and scans them in one batch: one recent row each.
async fn scan(store: &SqliteStore, tags: &[&str], now: Millis) {
    let targets: Vec<ScanTarget> = tags.iter().map(|tag| target("i1", "app", tag)).collect();
    store.enqueue(None, &targets, now).await.expect("enqueue");
    let batch = store
        .claim_batch("w1", now + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    assert_eq!(batch.images.len(), tags.len());
    store
        .complete(&batch, &receipt(), now + 2_100)
        .await
        .expect("complete");
}

fn move_at_least(store: &SqliteStore, rows: i64) -> usize {
    store
        .history
        .move_gathered(rows, &store.write_turn)
        .expect("move")
}

/// Settled images gather in the queue file and move to the history file
/// once enough wait; with history off, nothing is written anywhere.
#[tokio::test]
async fn rows_gather_in_the_queue_file_then_move_in_bulk_and_none_without_history() {
    for record in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let store = open_migrated(&path, 2).await.recording_history(record);
        scan(&store, &["v1", "v2", "v3"], T0).await;
        if !record {
            assert_eq!(move_at_least(&store, 1), 0);
            assert_eq!(places(&path), (0, 0, 0));
            assert_eq!(kinds(&store, "team-a/app:v1").await, []);
            continue;
        }
        assert_eq!(move_at_least(&store, 4), 0, "three rows wait, four asked");
        assert_eq!(places(&path), (3, 0, 0));
        assert_eq!(kinds(&store, "team-a/app:v2").await, SCANNED);
        assert_eq!(move_at_least(&store, 3), 3);
        assert_eq!(places(&path), (0, 3, 3));
        assert_eq!(kinds(&store, "team-a/app:v2").await, SCANNED);
    }
}

/// A crash after a move committed in the history file but before its
/// recent rows were deleted: the rows are on both sides, read once, and the
/// next move copies only what is new and deletes the rest.
#[tokio::test]
async fn a_crash_between_the_copy_and_the_delete_neither_doubles_nor_loses_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open_migrated(&path, 2).await;
    scan(&store, &["v1", "v2"], T0).await;
    assert_eq!(store.history.copy_only().expect("copy"), 2);
    assert_eq!(places(&path), (2, 2, 2), "copied, not deleted");
    assert_eq!(kinds(&store, "team-a/app:v1").await, SCANNED);

    // The bridge restarts on the same files.
    store.close();
    drop(store);
    let store = open_migrated(&path, 2).await;
    assert_eq!(kinds(&store, "team-a/app:v1").await, SCANNED);
    scan(&store, &["v3"], T0 + 10_000).await;
    assert_eq!(move_at_least(&store, 1), 1, "only the new row is copied");
    assert_eq!(places(&path), (0, 3, 3));
    for tag in ["v1", "v2", "v3"] {
        assert_eq!(kinds(&store, &format!("team-a/app:{tag}")).await, SCANNED);
    }
}

/// A move empties `recent_history`; the next rows, even after a restart,
/// get ids above the cursor (a plain rowid would start again at 1 and the
/// rows would be taken for moved ones).
#[tokio::test]
async fn recent_ids_are_not_reused_once_the_table_empties() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open_migrated(&path, 2).await;
    scan(&store, &["v1", "v2"], T0).await;
    assert_eq!(move_at_least(&store, 1), 2);
    assert_eq!(places(&path), (0, 2, 2));
    store.close();
    drop(store);

    let store = open_migrated(&path, 2).await;
    scan(&store, &["v3"], T0 + 10_000).await;
    let new_id: i64 = Connection::open(&path)
        .expect("open")
        .query_row("SELECT id FROM recent_history", [], |row| row.get(0))
        .expect("one recent row");
    assert_eq!(new_id, 3);
    assert_eq!(kinds(&store, "team-a/app:v3").await, SCANNED);
    assert_eq!(move_at_least(&store, 1), 1);
    assert_eq!(kinds(&store, "team-a/app:v3").await, SCANNED);
}

/// A queue file whose history was replaced (restored from an older backup,
/// say) numbers its recent rows from above the history file's cursor.
#[tokio::test]
async fn a_replaced_queue_file_numbers_its_rows_above_the_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open_migrated(&path, 2).await;
    scan(&store, &["v1", "v2"], T0).await;
    assert_eq!(move_at_least(&store, 1), 2);
    store.close();
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        if file.exists() {
            std::fs::remove_file(file).expect("remove");
        }
    }

    let store = open_migrated(&path, 2).await;
    scan(&store, &["v3"], T0 + 10_000).await;
    assert_eq!(kinds(&store, "team-a/app:v3").await, SCANNED);
    assert_eq!(move_at_least(&store, 1), 1);
    assert_eq!(places(&path), (0, 3, 3));
    assert_eq!(kinds(&store, "team-a/app:v3").await, SCANNED);
}

/// A queue file migrated up to 0006 kept its indexed history itself: after
/// the upgrade, those rows are answered from `recent_history`, then from the
/// history file once moved, and the queue file's old table is gone.
#[tokio::test]
async fn a_queue_file_from_0006_keeps_its_history_through_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    {
        let mut conn = Connection::open(&path).expect("open");
        configure_connection(&mut conn, std::time::Duration::from_secs(5)).expect("configure");
        apply_migrations(&mut conn, &migrations()[..6], T0).expect("migrate to 0006");
        conn.execute_batch(&format!(
            "INSERT INTO image_history (id, image_key, event, at_ms, source, batch_id, recorded_at)
             VALUES (40, 'team-a/old:1', 'accepted', {T0}, 's', 7, {scanned}),
                    (41, 'team-a/other:1', 'accepted', {T0}, 's', 7, {scanned});
             INSERT INTO recent_history (id, image_key, event, at_ms, source, reason, recorded_at)
             VALUES (3, 'team-a/old:1', 'duplicate', {dup}, 's', 'already_pending', {dup});
             INSERT INTO batch_events (batch_id, event, at_ms, api, hss_status)
             VALUES (7, 'sent', {sent}, NULL, NULL), (7, 'scanned', {scanned}, 'batch-scan', 200);",
            sent = T0 + 2_000,
            scanned = T0 + 2_100,
            dup = T0 + 3_000,
        ))
        .expect("rows of 0006");
    }
    let expected = [
        EventKind::Accepted,
        EventKind::Sent,
        EventKind::Scanned,
        EventKind::Duplicate,
    ];
    let store = open_migrated(&path, 2).await;
    assert_eq!(places(&path), (3, 0, 0), "back in recent_history");
    assert_eq!(kinds(&store, "team-a/old:1").await, expected);
    assert_eq!(move_at_least(&store, 1), 3);
    assert_eq!(places(&path), (0, 3, 3));
    assert_eq!(kinds(&store, "team-a/old:1").await, expected);
    assert_eq!(kinds(&store, "team-a/other:1").await, SCANNED);
    let old_tables: i64 = Connection::open(&path)
        .expect("open")
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'image_history%'",
            [],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(old_tables, 0);
}

/// A read that took the queue's snapshot, then a whole move (copy and
/// delete), then the read's history file part: each row once.
#[tokio::test]
async fn a_read_racing_a_move_sees_each_row_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open_migrated(&path, 2).await;
    scan(&store, &["v1", "v2"], T0).await;

    let mut reader = Connection::open(&path).expect("open");
    let snapshot = reader.transaction().expect("read transaction");
    let queue_part = queue_records(&snapshot, &subject("team-a/app:v1")).expect("queue part");
    assert_eq!(move_at_least(&store, 1), 2);
    assert_eq!(places(&path), (0, 2, 2), "moved and deleted meanwhile");
    let records = queue_part.with_moved(&store.history).expect("history part");
    snapshot.finish().expect("finish");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].event, EventKind::Accepted);

    // And rows recorded after the queue's snapshot are not half-shown.
    let snapshot = reader.transaction().expect("read transaction");
    let queue_part = queue_records(&snapshot, &subject("team-a/app:v4")).expect("queue part");
    scan(&store, &["v4"], T0 + 10_000).await;
    assert_eq!(move_at_least(&store, 1), 1);
    let records = queue_part.with_moved(&store.history).expect("history part");
    snapshot.finish().expect("finish");
    assert_eq!(records, []);
    assert_eq!(kinds(&store, "team-a/app:v4").await, SCANNED);
}

/// The mover moves by itself once enough rows wait.
#[tokio::test]
async fn the_mover_moves_once_enough_rows_gathered() {
    use crate::store::history::MERGE_AT;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open_migrated(&path, 2).await;
    let count = usize::try_from(MERGE_AT).expect("small");
    let tags: Vec<String> = (0..count).map(|n| format!("v{n}")).collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let policy = BatchPolicy {
        max_images: count,
        ..POLICY
    };
    let targets: Vec<ScanTarget> = tags.iter().map(|tag| target("i1", "app", tag)).collect();
    store.enqueue(None, &targets, T0).await.expect("enqueue");
    let batch = store
        .claim_batch("w1", T0 + 2_000, &policy)
        .await
        .expect("claim")
        .expect("batch");
    store
        .complete(&batch, &receipt(), T0 + 2_100)
        .await
        .expect("complete");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while places(&path) != (0, MERGE_AT, MERGE_AT) {
        assert!(
            std::time::Instant::now() < deadline,
            "not moved: {:?}",
            places(&path)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(kinds(&store, "team-a/app:v7").await, SCANNED);
}

/// A history file that cannot be opened stops the start, naming its path.
#[tokio::test]
async fn an_unusable_history_file_is_a_start_up_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    std::fs::create_dir_all(history_path(&path)).expect("a directory in its place");
    let err = SqliteStore::open(&path, 2)
        .await
        .expect_err("cannot open a directory");
    let message = err.to_string();
    assert!(
        message.contains(&history_path(&path).display().to_string()),
        "{message}"
    );
}
