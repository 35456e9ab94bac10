//! `PostgresStore` on the machine's PostgreSQL (started by `.ci/start-postgres`,
//! else a private throwaway cluster: see `common/postgres_support.rs`):
//! the shared `Store` contract, and what only a shared database adds: replicas
//! claiming at once, concurrent migrations, outages and recovery.
//!
//! Every test works in a schema of its own (`test_<uuid>`), dropped afterwards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use swr_scan_bridge::store::conformance::{self, receipt, target};
use swr_scan_bridge::store::migrations;
use swr_scan_bridge::store::postgres::PostgresStore;
use swr_scan_bridge::store::{
    BatchPolicy, ClaimedBatch, DeliveryKey, EnqueueCounts, Enqueued, PollStateStore, Store,
    StoreError,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

mod common;

use common::postgres_support;

/// The `test` database of the test server; only after [`admin`] found one.
fn database_url() -> String {
    postgres_support::test_server()
        .expect("admin() found the test server")
        .test_url()
}
const T0: i64 = 1_800_000_000_000;

/// The store's pool gives up on a connection after this long (see
/// `pool::ACQUIRE_TIMEOUT`); a refused connection must not wait for it.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A direct connection to set up and inspect; `None` when no PostgreSQL
/// is installed (the test is then skipped, see `postgres_support`).
async fn admin() -> Option<tokio_postgres::Client> {
    let url = postgres_support::test_server()?.test_url();
    match tokio_postgres::connect(&url, NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Some(client)
        }
        Err(error) => panic!("PostgreSQL is not reachable at {url} ({error})"),
    }
}

/// A schema for one test, dropped when the guard goes (also when the test
/// panics, so failed runs leave nothing behind).
struct TestSchema {
    name: String,
}

impl TestSchema {
    fn new() -> Self {
        Self {
            name: format!("test_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    async fn store(&self, pool_size: usize) -> PostgresStore {
        PostgresStore::connect(&database_url(), pool_size, Some(&self.name))
            .await
            .expect("connect")
    }

    async fn migrated_store(&self, pool_size: usize) -> PostgresStore {
        let store = self.store(pool_size).await;
        store.migrate().await.expect("migrate");
        store
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Bounded: a session of the test that still holds a lock in the schema
        // must make cleanup fail loudly, not hang the test binary.
        let drop_schema = format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.name
        );
        // Drop may run inside the test's runtime, where blocking on a future
        // is forbidden: clean up from a thread with a runtime of its own.
        // (That blocks the test's runtime meanwhile, so its own connection
        // tasks cannot run: the store must not leave transactions open.)
        let url = database_url();
        let outcome = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, NoTls)
                    .await
                    .map_err(|error| error.to_string())?;
                tokio::spawn(connection);
                client
                    .batch_execute(&drop_schema)
                    .await
                    .map_err(|error| error.to_string())
            })
        })
        .join();
        let failure = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error,
            Err(_) => "the cleanup thread panicked".to_string(),
        };
        // A failing test is already reported; a passing one must not hide
        // that it left a session holding locks.
        if std::thread::panicking() {
            eprintln!("could not drop schema {}: {failure}", self.name);
        } else {
            panic!("could not drop schema {}: {failure}", self.name);
        }
    }
}

fn stored(accepted: usize, duplicates: usize) -> Enqueued {
    Enqueued::Stored(EnqueueCounts {
        accepted,
        duplicates,
    })
}

#[tokio::test]
async fn postgres_store_meets_the_store_contract() {
    let Some(_admin) = admin().await else {
        return;
    };
    let schemas = Mutex::new(Vec::new());
    let schemas = &schemas;
    conformance::run_all(move || {
        let schema = TestSchema::new();
        let name = schema.name.clone();
        schemas.lock().expect("schemas").push(schema);
        async move {
            // TLS on: the contract holds over an encrypted link.
            PostgresStore::connect(
                &format!("{}?sslmode=require", database_url()),
                4,
                Some(&name),
            )
            .await
            .expect("connect")
        }
    })
    .await;
}

#[tokio::test]
async fn postgres_store_meets_the_poll_state_contract() {
    let Some(_admin) = admin().await else {
        return;
    };
    let schemas = Mutex::new(Vec::new());
    let schemas = &schemas;
    swr_scan_bridge::store::poll_state::conformance::run_all(move || {
        let schema = TestSchema::new();
        let name = schema.name.clone();
        schemas.lock().expect("schemas").push(schema);
        async move {
            let store = PostgresStore::connect(&database_url(), 4, Some(&name))
                .await
                .expect("connect");
            store.migrate().await.expect("migrate");
            store
        }
    })
    .await;
}

#[tokio::test]
async fn two_replicas_asking_at_once_never_both_get_a_poll_lease() {
    let Some(_admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    let store = PostgresStore::connect(&database_url(), 8, Some(&schema.name))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    for round in 0..20_i64 {
        let now = T0 + round * 10_000;
        let takes = (0..6).map(|replica| {
            let owner = format!("replica-{replica}");
            let store = &store;
            async move {
                store
                    .take_poll_lease("basic", &owner, now, now + 5_000)
                    .await
                    .expect("take")
            }
        });
        let holders = futures_util::future::join_all(takes)
            .await
            .into_iter()
            .filter(|held| *held)
            .count();
        assert_eq!(holders, 1, "round {round}: the previous lease had expired");
    }
}

#[tokio::test]
async fn a_search_path_in_the_url_isolates_the_store() {
    let Some(admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    let url = format!("{}?options=-csearch_path%3D{}", database_url(), schema.name);
    let store = PostgresStore::connect(&url, 2, None)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate creates the schema");
    assert_eq!(
        store
            .enqueue(None, &[target("i1", "api", "v1")], T0)
            .await
            .expect("enqueue"),
        stored(1, 0)
    );
    let row = admin
        .query_one(
            &format!("SELECT count(*) FROM \"{}\".pending_images", schema.name),
            &[],
        )
        .await
        .expect("the table lives in the schema named by the URL");
    assert_eq!(row.get::<_, i64>(0), 1);
}

#[tokio::test]
async fn replicas_migrating_at_once_apply_each_migration_once() {
    let Some(admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    let mut replicas = Vec::new();
    for _ in 0..6 {
        replicas.push(schema.store(1).await);
    }
    let outcomes =
        futures_util::future::join_all(replicas.iter().map(|replica| replica.migrate())).await;
    for outcome in outcomes {
        outcome.expect("every replica's migrate succeeds");
    }
    replicas[0].migrate().await.expect("migrate again");
    let versions: Vec<i64> = admin
        .query(
            &format!(
                "SELECT version FROM \"{}\".schema_migrations ORDER BY version",
                schema.name
            ),
            &[],
        )
        .await
        .expect("schema_migrations")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, migration_versions_on_disk());
}

/// The versions of `src/store/migrations/{postgres,both}/NNNN_name.sql`, in order.
fn migration_versions_on_disk() -> Vec<i64> {
    let mut versions: Vec<i64> = ["postgres", "both"]
        .iter()
        .flat_map(|dir| {
            let dir = format!("{}/src/store/migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read_dir(dir).expect("migrations directory")
        })
        .map(|entry| {
            let name = entry.expect("entry").file_name();
            let name = name.to_string_lossy();
            name[..4]
                .parse()
                .unwrap_or_else(|_| panic!("{name} is not NNNN_name.sql"))
        })
        .collect();
    versions.sort_unstable();
    versions
}

/// Steps 1–6 were rewritten from one file per dialect into templates
/// (`both/`); the record was taken from the files as they were, so the
/// templates must build exactly the schema already deployed.
#[tokio::test]
async fn steps_up_to_0006_build_the_recorded_schema() {
    let Some(admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA \"{0}\"; SET search_path TO \"{0}\"",
            schema.name
        ))
        .await
        .expect("schema of its own");
    for migration in migrations::POSTGRES.iter().take(6) {
        admin
            .batch_execute(&migration.sql)
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", migration.name));
    }
    let built = postgres_schema(&admin, &schema.name).await;
    assert_eq!(
        built,
        include_str!("../src/store/migrations/recorded/postgres_schema_at_0006.txt")
    );
}

/// `schema`'s columns, constraints, indexes and comments, one line each.
async fn postgres_schema(admin: &tokio_postgres::Client, schema: &str) -> String {
    let catalog_queries = [
        "SELECT 'column ' || table_name || '.' || column_name || ': ' || data_type
                || ' nullable=' || is_nullable || ' default=' || coalesce(column_default, '-')
                || ' identity=' || coalesce(identity_generation, '-')
         FROM information_schema.columns WHERE table_schema = $1
         ORDER BY table_name, ordinal_position",
        "SELECT 'constraint ' || rel.relname || '.' || con.conname || ': '
                || pg_get_constraintdef(con.oid)
         FROM pg_constraint con
         JOIN pg_class rel ON rel.oid = con.conrelid
         JOIN pg_namespace ns ON ns.oid = rel.relnamespace
         WHERE ns.nspname = $1 ORDER BY rel.relname, con.conname",
        "SELECT 'index ' || indexname || ': ' || replace(indexdef, $1 || '.', '')
         FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname",
        "SELECT 'comment ' || rel.relname || ': ' || d.description
         FROM pg_description d
         JOIN pg_class rel ON rel.oid = d.objoid
         JOIN pg_namespace ns ON ns.oid = rel.relnamespace
         WHERE ns.nspname = $1 ORDER BY rel.relname, d.objsubid",
    ];
    let mut lines = String::new();
    for query in catalog_queries {
        for row in admin.query(query, &[&schema]).await.expect("catalog") {
            lines.push_str(row.get::<_, &str>(0));
            lines.push('\n');
        }
    }
    lines
}

#[tokio::test]
async fn queries_on_a_schema_never_migrated_are_query_errors() {
    let Some(_admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    let store = schema.store(1).await;
    match store.enqueue(None, &[target("i1", "api", "v1")], T0).await {
        Err(StoreError::Query(message)) => {
            assert!(message.contains("SQLSTATE 42P01"), "{message}")
        }
        other => panic!("expected a query error, got {other:?}"),
    }
}

#[tokio::test]
async fn images_pushed_to_different_replicas_leave_in_one_batch() {
    let Some(_admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    let replica_a = schema.migrated_store(2).await;
    let replica_b = schema.migrated_store(2).await;
    let policy = conformance::POLICY;
    replica_a
        .enqueue(None, &[target("i1", "api", "v1")], T0)
        .await
        .expect("enqueue on A");
    replica_b
        .enqueue(None, &[target("i1", "api", "v2")], T0 + 1_500)
        .await
        .expect("enqueue on B");
    assert_eq!(
        replica_a
            .claim_batch("a", T0 + 1_999, &policy)
            .await
            .expect("claim"),
        None
    );
    let batch = replica_b
        .claim_batch("b", T0 + 2_000, &policy)
        .await
        .expect("claim")
        .expect("one batch for the window");
    let tags: Vec<&str> = batch.images.iter().map(|i| i.image.tag.as_str()).collect();
    assert_eq!(tags, ["v1", "v2"]);
    assert_eq!(
        replica_a
            .claim_batch("a", T0 + 2_000, &policy)
            .await
            .expect("claim"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivery_racing_the_first_is_stored_once() {
    let Some(_admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    let replicas = [
        Arc::new(schema.migrated_store(4).await),
        Arc::new(schema.migrated_store(4).await),
    ];
    let key = DeliveryKey {
        source: "swr-ee".into(),
        id: "msg-1".into(),
    };
    let deliveries: Vec<JoinHandle<Enqueued>> = (0..20)
        .map(|n| {
            let replica = Arc::clone(&replicas[n % 2]);
            let key = key.clone();
            tokio::spawn(async move {
                replica
                    .enqueue(Some(&key), &[target("i1", "api", "v1")], T0)
                    .await
                    .expect("enqueue")
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for delivery in deliveries {
        outcomes.push(delivery.await.expect("task"));
    }
    let first = outcomes.iter().filter(|o| **o == stored(1, 0)).count();
    let duplicates = outcomes
        .iter()
        .filter(|o| **o == Enqueued::DuplicateDelivery)
        .count();
    assert_eq!((first, duplicates), (1, 19));
    assert_eq!(replicas[0].stats().await.expect("stats").pending_images, 1);
}

/// Claims from `workers` concurrent tasks spread over the replicas, each
/// until it gets nothing; returns every batch handed out.
async fn claim_until_empty(
    replicas: &[Arc<PostgresStore>],
    workers: usize,
    now: i64,
    policy: BatchPolicy,
) -> Vec<ClaimedBatch> {
    let tasks: Vec<JoinHandle<Vec<ClaimedBatch>>> = (0..workers)
        .map(|worker| {
            let replica_index = worker % replicas.len();
            let replica = Arc::clone(&replicas[replica_index]);
            let owner = format!("replica{replica_index}-worker{worker}");
            tokio::spawn(async move {
                let mut claimed = Vec::new();
                while let Some(batch) = replica
                    .claim_batch(&owner, now, &policy)
                    .await
                    .expect("claim")
                {
                    claimed.push(batch);
                }
                claimed
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("claim task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_claiming_at_once_never_share_or_split_a_batch() {
    let Some(_admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    let replicas = [
        Arc::new(schema.store(4).await),
        Arc::new(schema.store(4).await),
    ];
    let (a, b) = tokio::join!(replicas[0].migrate(), replicas[1].migrate());
    a.expect("migrate A");
    b.expect("migrate B");
    let policy = BatchPolicy {
        window_ms: 2_000,
        max_images: 5,
        lease_ms: 30_000,
    };
    let partition_sizes = [("i1", 23usize), ("i2", 10), ("i3", 1)];

    // Every image is pushed twice, through alternating replicas, concurrently.
    let mut pushes = Vec::new();
    for (instance, count) in partition_sizes {
        for n in 0..count {
            for copy in 0..2 {
                let replica = Arc::clone(&replicas[(n + copy) % 2]);
                let image = target(instance, "api", &format!("v{n:02}"));
                pushes.push(tokio::spawn(async move {
                    replica
                        .enqueue(None, &[image], T0 + n as i64)
                        .await
                        .expect("enqueue")
                }));
            }
        }
    }
    let mut totals = EnqueueCounts::default();
    for push in pushes {
        let Enqueued::Stored(counts) = push.await.expect("push task") else {
            panic!("no delivery id was given");
        };
        totals.accepted += counts.accepted;
        totals.duplicates += counts.duplicates;
    }
    assert_eq!(
        totals,
        EnqueueCounts {
            accepted: 34,
            duplicates: 34
        }
    );

    // Every partition is due; 16 workers on two replicas take it all.
    let now = T0 + policy.window_ms + 100;
    let claimed = claim_until_empty(&replicas, 16, now, policy).await;
    let ids: HashSet<i64> = claimed.iter().map(|batch| batch.id).collect();
    assert_eq!(ids.len(), claimed.len(), "no batch was handed out twice");
    let mut by_partition: BTreeMap<String, Vec<&ClaimedBatch>> = BTreeMap::new();
    for batch in &claimed {
        assert_eq!(batch.attempt, 1);
        assert_eq!(batch.lease_until, now + policy.lease_ms);
        let instance = batch.partition.instance_id.clone().expect("instance id");
        by_partition.entry(instance).or_default().push(batch);
    }
    for (instance, count) in partition_sizes {
        let mut batches = by_partition.remove(instance).unwrap_or_default();
        batches.sort_by_key(|batch| batch.id);
        // Full batches while the partition has enough, then one with the
        // rest: a window split between replicas would show smaller batches.
        let sizes: Vec<usize> = batches.iter().map(|batch| batch.images.len()).collect();
        let mut expected = vec![policy.max_images; count / policy.max_images];
        if count % policy.max_images != 0 {
            expected.push(count % policy.max_images);
        }
        assert_eq!(sizes, expected, "batch sizes of {instance}");
        // Oldest first, each image exactly once.
        let tags: Vec<String> = batches
            .iter()
            .flat_map(|batch| batch.images.iter().map(|image| image.image.tag.clone()))
            .collect();
        let expected_tags: Vec<String> = (0..count).map(|n| format!("v{n:02}")).collect();
        assert_eq!(tags, expected_tags, "images of {instance}");
    }
    assert!(by_partition.is_empty(), "unexpected partitions");

    // While the leases hold, nobody gets anything.
    for replica in &replicas {
        let late = now + policy.lease_ms - 1;
        assert_eq!(
            replica
                .claim_batch("late", late, &policy)
                .await
                .expect("claim"),
            None
        );
    }

    // The leases run out: every batch is taken over exactly once, unchanged.
    let expiry = now + policy.lease_ms;
    let taken_over = claim_until_empty(&replicas, 16, expiry, policy).await;
    assert_eq!(
        taken_over.len(),
        claimed.len(),
        "every expired batch is taken over exactly once"
    );
    let originals: HashMap<i64, &ClaimedBatch> =
        claimed.iter().map(|batch| (batch.id, batch)).collect();
    let mut seen = HashSet::new();
    for batch in &taken_over {
        assert!(seen.insert(batch.id), "batch {} taken twice", batch.id);
        let original = originals.get(&batch.id).expect("a known batch");
        assert_eq!(batch.attempt, 2);
        assert_eq!(batch.images, original.images);
        assert_eq!(batch.lease_until, expiry + policy.lease_ms);
    }

    let completions: Vec<JoinHandle<()>> = taken_over
        .into_iter()
        .enumerate()
        .map(|(n, batch)| {
            let replica = Arc::clone(&replicas[n % 2]);
            tokio::spawn(async move {
                replica
                    .complete(&batch, &receipt(), T0)
                    .await
                    .expect("complete")
            })
        })
        .collect();
    for completion in completions {
        completion.await.expect("complete task");
    }
    let stats = replicas[1].stats().await.expect("stats");
    assert_eq!(stats.pending_images, 0);
    assert_eq!(stats.batches_in_flight, 0);
}

/// A port on 127.0.0.1 where nothing listens.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn a_refused_connection_is_unavailable_at_once() {
    let port = closed_port().await;
    let url = format!("postgres://postgres@127.0.0.1:{port}/test");
    let store = PostgresStore::connect(&url, 2, Some("unused"))
        .await
        .expect("connect does not need the database");
    let started = Instant::now();
    match store.ping().await {
        Err(StoreError::Unavailable(message)) => assert!(
            message.starts_with(&format!(
                "cannot connect to PostgreSQL at 127.0.0.1:{port}: error connecting to server: "
            )) && message.contains("refused"),
            "{message}"
        ),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let enqueue = store.enqueue(None, &[target("i1", "api", "v1")], T0).await;
    assert!(
        matches!(&enqueue, Err(StoreError::Unavailable(_))),
        "{enqueue:?}"
    );
    let claim = store.claim_batch("w", T0, &conformance::POLICY).await;
    assert!(
        matches!(&claim, Err(StoreError::Unavailable(_))),
        "{claim:?}"
    );
    let migrate = store.migrate().await;
    assert!(
        matches!(&migrate, Err(StoreError::Unavailable(_))),
        "{migrate:?}"
    );
    assert!(
        started.elapsed() < ACQUIRE_TIMEOUT,
        "refused connections took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_database_that_never_answers_is_unavailable_within_seconds() {
    // Accepts connections and never says a word, like a hung server.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("postgres://postgres@127.0.0.1:{port}/test");
    let store = PostgresStore::connect(&url, 2, None)
        .await
        .expect("connect");
    let started = Instant::now();
    let ping = store.ping().await;
    let waited = started.elapsed();
    silent.abort();
    match ping {
        Err(StoreError::Unavailable(message)) => assert_eq!(
            message,
            format!("timed out getting a PostgreSQL connection to 127.0.0.1:{port} (Create)")
        ),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        waited < ACQUIRE_TIMEOUT * 2,
        "gave up only after {waited:?}"
    );
}

/// A TCP relay in front of PostgreSQL that can "go down" (refuse and cut
/// every connection) and come back on the same port, so that an outage can
/// be played without stopping the machine's shared PostgreSQL.
struct Proxy {
    listen: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = Proxy {
            listen: listener.local_addr().expect("proxy addr"),
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let tasks = Arc::clone(&self.tasks);
        let server = postgres_support::test_server()
            .expect("admin() found the test server")
            .addr;
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(server).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().expect("tasks").push(relay);
            }
        });
        self.tasks.lock().expect("tasks").push(accept);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@{}/test", self.listen)
    }

    /// The database goes away: the port refuses, open connections are cut.
    async fn stop(&self) {
        // Until no task is left: the accept loop may have started a relay
        // between two rounds, but none once it is gone.
        loop {
            let tasks: Vec<JoinHandle<()>> = self.tasks.lock().expect("tasks").drain(..).collect();
            if tasks.is_empty() {
                return;
            }
            for task in &tasks {
                task.abort();
            }
            for task in tasks {
                let _ = task.await;
            }
        }
    }

    async fn restart(&self) {
        let listener = TcpListener::bind(self.listen)
            .await
            .expect("rebind the proxy port");
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
    }
}

#[tokio::test]
async fn the_store_recovers_by_itself_when_the_database_returns() {
    let Some(_admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    let proxy = Proxy::start().await;
    let store = PostgresStore::connect(&proxy.url(), 2, Some(&schema.name))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    assert_eq!(
        store
            .enqueue(None, &[target("i1", "api", "v1")], T0)
            .await
            .expect("enqueue before the outage"),
        stored(1, 0)
    );

    proxy.stop().await;
    let started = Instant::now();
    let ping = store.ping().await;
    assert!(matches!(&ping, Err(StoreError::Unavailable(_))), "{ping:?}");
    let enqueue = store
        .enqueue(None, &[target("i1", "api", "v2")], T0 + 1)
        .await;
    assert!(
        matches!(&enqueue, Err(StoreError::Unavailable(_))),
        "{enqueue:?}"
    );
    assert!(
        started.elapsed() < ACQUIRE_TIMEOUT,
        "an outage took {:?} to report",
        started.elapsed()
    );

    proxy.restart().await;
    store
        .ping()
        .await
        .expect("ping after the database returned");
    assert_eq!(
        store
            .enqueue(None, &[target("i1", "api", "v2")], T0 + 2)
            .await
            .expect("enqueue after the outage"),
        stored(1, 0)
    );
    let tags: Vec<String> = store
        .pending(10)
        .await
        .expect("pending")
        .into_iter()
        .map(|pending| pending.image.tag)
        .collect();
    assert_eq!(tags, ["v1", "v2"], "nothing acknowledged was lost");
}

#[tokio::test]
async fn connections_the_server_killed_are_replaced_before_use() {
    let Some(admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    let application = format!("bridge-{}", schema.name);
    let url = format!("{}?application_name={application}", database_url());
    let store = PostgresStore::connect(&url, 2, Some(&schema.name))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store.ping().await.expect("ping");

    // What a database restart does to every pooled connection.
    let killed: i64 = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))
             FROM pg_stat_activity WHERE application_name = $1",
            &[&application],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(killed, 1, "the pool held one connection");

    assert_eq!(
        store
            .enqueue(None, &[target("i1", "api", "v1")], T0)
            .await
            .expect("the first call after the kill already succeeds"),
        stored(1, 0)
    );
}

// ---------------------------------------------------------------------------
// TLS (the test server serves TLS: the machine's Debian cluster with its
// snakeoil certificate, or the private cluster with one made by openssl)
// ---------------------------------------------------------------------------

/// A CA that signed nothing the test server presents.
const UNRELATED_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBwjCCAWmgAwIBAgIUNsJlnyKxr+s+VbtNXxb9tqoueGEwCgYIKoZIzj0EAwIw
NjE0MDIGA1UEAwwrc3dyLXNjYW4tYnJpZGdlIHRlc3QgQ0EgdGhhdCBzaWduZWQg
bm90aGluZzAgFw0yNjEyMDEwNDQzNDZaGA8yMTI2MTEwNzA0NDM0NlowNjE0MDIG
A1UEAwwrc3dyLXNjYW4tYnJpZGdlIHRlc3QgQ0EgdGhhdCBzaWduZWQgbm90aGlu
ZzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABBnJ7jLK9vVTTvW75H0apsPLhEjg
CSLODqjLe9F5ojs0ZrO853RENlpBCV/dnFm43QK8huBF6m26a5fBs7r9EnmjUzBR
MB0GA1UdDgQWBBRUh67uE3WTAUraB3VAhfcYYskbhjAfBgNVHSMEGDAWgBRUh67u
E3WTAUraB3VAhfcYYskbhjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cA
MEQCIHUxnJTBJ8qH7xVCO78kgCeSa2VJdIo9HZq8pGiHD7HzAiAOw5IEzWPwjhqc
qxrCyCjyrCeznG8RqrLZOGCEKqL8Gw==
-----END CERTIFICATE-----
";

/// Whether the server serves TLS; says loudly when it does not (and fails
/// under CI, where it must).
async fn serves_tls(admin: &tokio_postgres::Client) -> bool {
    let ssl: String = admin
        .query_one("SHOW ssl", &[])
        .await
        .expect("SHOW ssl")
        .get(0);
    if ssl == "on" {
        return true;
    }
    let message = "!!! SKIPPING a TLS test: the test PostgreSQL server has ssl = off !!!";
    assert!(
        !std::env::var("CI").is_ok_and(|ci| ci == "true"),
        "{message} (a failure under CI=true)"
    );
    postgres_support::loud(message);
    false
}

/// Whether the store's connections (named `application`) use TLS, from the
/// server's side.
async fn connections_use_tls(admin: &tokio_postgres::Client, application: &str) -> Vec<bool> {
    admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = $1",
            &[&application],
        )
        .await
        .expect("pg_stat_ssl")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn sslmode_require_and_the_default_prefer_speak_tls() {
    let Some(admin) = admin().await else {
        return;
    };
    if !serves_tls(&admin).await {
        return;
    }
    for (sslmode, tls) in [
        ("sslmode=require", true),
        ("sslmode=prefer", true),
        // Nothing said: prefer, as libpq.
        ("connect_timeout=5", true),
        ("sslmode=disable", false),
    ] {
        let schema = TestSchema::new();
        let application = format!("tls-{}", schema.name);
        let url = format!(
            "{}?{sslmode}&application_name={application}",
            database_url()
        );
        let store = PostgresStore::connect(&url, 1, Some(&schema.name))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        assert_eq!(
            store
                .enqueue(None, &[target("i1", "api", "v1")], T0)
                .await
                .expect("enqueue"),
            stored(1, 0),
            "{sslmode}"
        );
        assert_eq!(
            connections_use_tls(&admin, &application).await,
            [tls],
            "{sslmode}"
        );
    }
}

#[tokio::test]
async fn verify_full_with_a_wrong_ca_fails_clearly_and_at_once() {
    let Some(admin) = admin().await else {
        return;
    };
    if !serves_tls(&admin).await {
        return;
    }
    let server = postgres_support::test_server().expect("admin() found it");
    let ca = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(ca.path(), UNRELATED_CA).expect("write CA");
    let url = format!(
        "postgres://postgres:hunter2@{}/test?sslmode=verify-full&sslrootcert={}",
        server.addr,
        ca.path().display()
    );
    let store = PostgresStore::connect(&url, 2, None)
        .await
        .expect("the root file is readable");
    let started = Instant::now();
    let ping = store.ping().await;
    let waited = started.elapsed();
    match ping {
        Err(StoreError::Unavailable(message)) => {
            assert!(
                message.starts_with(&format!(
                    "cannot connect to PostgreSQL at {}: error performing TLS handshake: ",
                    server.addr
                )) && message.contains("invalid peer certificate: UnknownIssuer"),
                "{message}"
            );
            assert!(!message.contains("hunter2"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        waited < ACQUIRE_TIMEOUT,
        "a bad certificate took {waited:?}"
    );
    // The same for enqueues: nothing is stored over an unverified link.
    assert!(matches!(
        store.enqueue(None, &[target("i1", "api", "v1")], T0).await,
        Err(StoreError::Unavailable(message)) if message.contains("UnknownIssuer")
    ));
}

/// The server's own certificate file, when it is self-signed and readable
/// (so that it can serve as the root that signed it).
async fn self_signed_server_certificate(admin: &tokio_postgres::Client) -> Option<String> {
    let file: String = admin
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .expect("SHOW ssl_cert_file")
        .get(0);
    let directory: String = admin
        .query_one("SHOW data_directory", &[])
        .await
        .map(|row| row.get(0))
        .unwrap_or_default();
    let path = std::path::Path::new(&directory).join(&file);
    std::fs::read_to_string(path)
        .ok()
        .filter(|pem| pem.matches("BEGIN CERTIFICATE").count() == 1)
}

#[tokio::test]
async fn verify_ca_trusts_the_root_and_verify_full_also_checks_the_host_name() {
    let Some(admin) = admin().await else {
        return;
    };
    if !serves_tls(&admin).await {
        return;
    }
    let Some(certificate) = self_signed_server_certificate(&admin).await else {
        postgres_support::loud(
            "the server's certificate is not readable here; nothing to verify against",
        );
        return;
    };
    let server = postgres_support::test_server().expect("admin() found it");
    let root = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(root.path(), certificate).expect("write root");
    let url = |host: &str, sslmode: &str| {
        format!(
            "postgres://postgres@{host}:{}/test?sslmode={sslmode}&sslrootcert={}",
            server.addr.port(),
            root.path().display()
        )
    };
    // The test certificates are issued for `localhost`, never for an address.
    let ip = server.addr.ip().to_string();
    for (url, outcome) in [
        (url(&ip, "verify-ca"), Ok(())),
        (url("localhost", "verify-full"), Ok(())),
        (
            url(&ip, "verify-full"),
            Err("certificate not valid for name"),
        ),
    ] {
        let store = PostgresStore::connect(&url, 1, None)
            .await
            .expect("connect");
        match (store.ping().await, outcome) {
            (Ok(()), Ok(())) => {}
            (Err(StoreError::Unavailable(message)), Err(reason)) => {
                assert!(message.contains(reason), "{url}: {message}")
            }
            (other, expected) => panic!("{url}: got {other:?}, expected {expected:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Group commit
// ---------------------------------------------------------------------------

/// A trigger that makes chosen tags misbehave: `slow` holds its commit for
/// 300 ms, `broken` fails its statement for good, `flaky` with a transient
/// error (serialization failure).
async fn install_trap(admin: &tokio_postgres::Client, schema: &str) {
    admin
        .batch_execute(&format!(
            "CREATE FUNCTION \"{schema}\".trap() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.tag = 'slow' THEN PERFORM pg_sleep(0.3); END IF;
                 IF NEW.tag = 'broken' THEN RAISE EXCEPTION 'broken image'; END IF;
                 IF NEW.tag = 'flaky' THEN
                     RAISE EXCEPTION 'try again' USING ERRCODE = '40001';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER trap BEFORE INSERT ON \"{schema}\".pending_images
                 FOR EACH ROW EXECUTE FUNCTION \"{schema}\".trap();"
        ))
        .await
        .expect("install trap");
}

/// Enqueues `tags` (one image each, one webhook each) concurrently, while a
/// `slow` webhook's group holds the commit, so that they queue up and are
/// committed together as the next group.
async fn enqueue_behind_a_slow_group(
    store: &Arc<PostgresStore>,
    webhooks: Vec<(Option<DeliveryKey>, Vec<&'static str>)>,
) -> Vec<Result<Enqueued, StoreError>> {
    let slow = {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            store
                .enqueue(None, &[target("i0", "api", "slow")], T0)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut queued: Vec<JoinHandle<Result<Enqueued, StoreError>>> = Vec::new();
    for (delivery, tags) in webhooks {
        let store = Arc::clone(store);
        let targets: Vec<_> = tags.iter().map(|tag| target("i1", "api", tag)).collect();
        queued.push(tokio::spawn(async move {
            store.enqueue(delivery.as_ref(), &targets, T0).await
        }));
        // Queued in this order: "one by one" means in arrival order.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        slow.await.expect("slow task").expect("slow enqueue"),
        stored(1, 0)
    );
    let mut outcomes = Vec::new();
    for webhook in queued {
        outcomes.push(webhook.await.expect("task"));
    }
    outcomes
}

fn delivery(id: &str) -> Option<DeliveryKey> {
    Some(DeliveryKey {
        source: "harbor".into(),
        id: id.into(),
    })
}

/// Distinct transactions that wrote the pending images (`xmin`).
async fn writing_transactions(admin: &tokio_postgres::Client, schema: &str) -> i64 {
    admin
        .query_one(
            &format!("SELECT count(DISTINCT xmin::text) FROM \"{schema}\".pending_images"),
            &[],
        )
        .await
        .expect("count transactions")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_group_answers_each_webhook_as_if_they_came_one_by_one() {
    let Some(admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    // Pool 2: one group commits at a time, so the queued webhooks form one group.
    let store = Arc::new(schema.migrated_store(2).await);
    install_trap(&admin, &schema.name).await;
    store
        .enqueue(delivery("seen-before").as_ref(), &[], T0 - 1)
        .await
        .expect("remember a delivery");
    let outcomes = enqueue_behind_a_slow_group(
        &store,
        vec![
            (delivery("d1"), vec!["a", "b"]),
            // The same image twice in one webhook, and one already taken.
            (None, vec!["c", "c", "a"]),
            // A redelivery of d1 in the same group stores nothing.
            (delivery("d1"), vec!["z"]),
            (delivery("seen-before"), vec!["y"]),
            (delivery("d2"), vec!["b", "d"]),
            (None, vec![]),
        ],
    )
    .await;
    let outcomes: Vec<Enqueued> = outcomes
        .into_iter()
        .map(|outcome| outcome.expect("stored"))
        .collect();
    assert_eq!(
        outcomes,
        [
            stored(2, 0),
            stored(1, 2),
            Enqueued::DuplicateDelivery,
            Enqueued::DuplicateDelivery,
            stored(1, 1),
            stored(0, 0),
        ]
    );
    let mut tags: Vec<String> = store
        .pending(100)
        .await
        .expect("pending")
        .into_iter()
        .map(|pending| pending.image.tag)
        .collect();
    tags.sort();
    assert_eq!(tags, ["a", "b", "c", "d", "slow"]);
    // `slow` alone, then everything queued behind it in one transaction.
    assert_eq!(writing_transactions(&admin, &schema.name).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_that_breaks_the_statement_fails_alone() {
    let Some(admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    // Pool 2: one group commits at a time, so the queued webhooks form one group.
    let store = Arc::new(schema.migrated_store(2).await);
    install_trap(&admin, &schema.name).await;
    let outcomes = enqueue_behind_a_slow_group(
        &store,
        vec![
            (delivery("d1"), vec!["a"]),
            (delivery("d2"), vec!["broken"]),
            (delivery("d3"), vec!["b"]),
        ],
    )
    .await;
    assert_eq!(outcomes[0].as_ref().expect("a"), &stored(1, 0));
    assert!(
        matches!(&outcomes[1], Err(StoreError::Query(message)) if message.contains("broken image")),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2].as_ref().expect("b"), &stored(1, 0));
    // Its delivery id went with it: a redelivery is stored, not a duplicate.
    assert!(matches!(
        store
            .enqueue(delivery("d2").as_ref(), &[target("i1", "api", "fixed")], T0)
            .await,
        Ok(Enqueued::Stored(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_group_answers_every_member_unavailable_and_stores_none() {
    let Some(admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    // Pool 2: one group commits at a time, so the queued webhooks form one group.
    let store = Arc::new(schema.migrated_store(2).await);
    install_trap(&admin, &schema.name).await;
    let outcomes = enqueue_behind_a_slow_group(
        &store,
        vec![
            (delivery("d1"), vec!["a"]),
            (delivery("d2"), vec!["flaky"]),
            (None, vec!["b"]),
        ],
    )
    .await;
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Err(StoreError::Unavailable(message)) if message.contains("40001")),
            "{outcome:?}"
        );
    }
    let tags: Vec<String> = store
        .pending(10)
        .await
        .expect("pending")
        .into_iter()
        .map(|pending| pending.image.tag)
        .collect();
    assert_eq!(tags, ["slow"], "nothing of the failed group was stored");
    // Not remembered either: the senders' retries are stored.
    assert_eq!(
        store
            .enqueue(delivery("d1").as_ref(), &[target("i1", "api", "a")], T0)
            .await
            .expect("retry"),
        stored(1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_webhooks_share_commits_and_each_is_stored_once() {
    let Some(admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    let store = Arc::new(schema.migrated_store(4).await);
    let webhooks = 400;
    let tasks: Vec<JoinHandle<Enqueued>> = (0..webhooks)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                // Every image twice, every delivery id twice.
                let key = delivery(&format!("d{}", n / 2));
                let image = target("i1", "api", &format!("v{}", n % (webhooks / 2)));
                store
                    .enqueue(key.as_ref(), &[image], T0 + n as i64)
                    .await
                    .expect("enqueue")
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    let redeliveries = outcomes
        .iter()
        .filter(|o| **o == Enqueued::DuplicateDelivery)
        .count();
    assert_eq!(redeliveries, webhooks / 2, "one of each delivery id's two");
    let accepted: usize = outcomes
        .iter()
        .map(|o| match o {
            Enqueued::Stored(counts) => counts.accepted,
            Enqueued::DuplicateDelivery => 0,
        })
        .sum();
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.pending_images, accepted as u64);
    let transactions = writing_transactions(&admin, &schema.name).await;
    assert!(
        transactions < webhooks as i64 / 4,
        "webhooks arriving together share commits: {transactions} transactions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_in_flight_when_the_database_goes_away_fails_cleanly() {
    let Some(admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    let proxy = Proxy::start().await;
    let store = Arc::new(
        PostgresStore::connect(&proxy.url(), 4, Some(&schema.name))
            .await
            .expect("connect"),
    );
    store.migrate().await.expect("migrate");
    install_trap(&admin, &schema.name).await;
    // `slow` holds its group in flight while the connection is cut.
    let in_flight = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .enqueue(delivery("d1").as_ref(), &[target("i1", "api", "slow")], T0)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.stop().await;
    let outcome = in_flight.await.expect("task");
    assert!(
        matches!(&outcome, Err(StoreError::Unavailable(_))),
        "{outcome:?}"
    );
    proxy.restart().await;
    // The sender retries: stored now, or a duplicate if the cut came after
    // the commit; either way nothing acknowledged is lost.
    let retried = store
        .enqueue(
            delivery("d1").as_ref(),
            &[target("i1", "api", "slow")],
            T0 + 1,
        )
        .await
        .expect("the retry after the database returned");
    assert!(
        matches!(retried, Enqueued::Stored(_) | Enqueued::DuplicateDelivery),
        "{retried:?}"
    );
    let tags: Vec<String> = store
        .pending(10)
        .await
        .expect("pending")
        .into_iter()
        .map(|pending| pending.image.tag)
        .collect();
    assert_eq!(tags, ["slow"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_failed_for_the_servers_reasons_is_not_reused() {
    let Some(admin) = admin().await else {
        return;
    };
    let schema = TestSchema::new();
    let application = format!("discard-{}", schema.name);
    let url = format!("{}?application_name={application}", database_url());
    let store = PostgresStore::connect(&url, 1, Some(&schema.name))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    install_trap(&admin, &schema.name).await;
    let backends = || async {
        admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&application],
            )
            .await
            .expect("pg_stat_activity")
            .iter()
            .map(|row| row.get::<_, i32>(0))
            .collect::<Vec<i32>>()
    };
    store
        .enqueue(None, &[target("i1", "api", "v1")], T0)
        .await
        .expect("enqueue");
    let before = backends().await;
    assert_eq!(before.len(), 1, "one pooled connection");
    // A transient failure (as a standby's read-only answer after a failover).
    assert!(matches!(
        store
            .enqueue(None, &[target("i1", "api", "flaky")], T0)
            .await,
        Err(StoreError::Unavailable(_))
    ));
    store
        .enqueue(None, &[target("i1", "api", "v2")], T0)
        .await
        .expect("enqueue on a new connection");
    let after = backends().await;
    assert!(
        after.iter().any(|pid| !before.contains(pid)),
        "a new connection served the next webhook: before {before:?}, after {after:?}"
    );
}
