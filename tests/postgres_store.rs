//! `PostgresStore` on the machine's PostgreSQL (started by `.ci/start-postgres`):
//! the shared `Store` contract, and what only a shared database adds: replicas
//! claiming at once, concurrent migrations, outages and recovery.
//!
//! Every test works in a schema of its own (`test_<uuid>`), dropped afterwards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use swr_scan_bridge::store::conformance::{self, target};
use swr_scan_bridge::store::postgres::PostgresStore;
use swr_scan_bridge::store::{
    BatchPolicy, ClaimedBatch, DeliveryKey, EnqueueCounts, Enqueued, PollStateStore, Store,
    StoreError,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

const POSTGRES_ADDR: &str = "127.0.0.1:5432";
const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const T0: i64 = 1_800_000_000_000;

/// The store's pool gives up on a connection after this long (see
/// `pool::ACQUIRE_TIMEOUT`); a refused connection must not wait for it.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A direct connection to set up and inspect. Fails the test, saying what to
/// do, when PostgreSQL is not running: these tests are never skipped.
async fn admin() -> tokio_postgres::Client {
    match tokio_postgres::connect(DATABASE_URL, NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(error) => panic!(
            "PostgreSQL is not reachable at {DATABASE_URL} ({error}); \
             start it with .ci/start-postgres"
        ),
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
        PostgresStore::connect(DATABASE_URL, pool_size, Some(&self.name))
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
        let outcome = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(DATABASE_URL, NoTls)
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
    let _admin = admin().await;
    let schemas = Mutex::new(Vec::new());
    let schemas = &schemas;
    conformance::run_all(move || {
        let schema = TestSchema::new();
        let name = schema.name.clone();
        schemas.lock().expect("schemas").push(schema);
        async move {
            PostgresStore::connect(DATABASE_URL, 4, Some(&name))
                .await
                .expect("connect")
        }
    })
    .await;
}

#[tokio::test]
async fn postgres_store_meets_the_poll_state_contract() {
    let _admin = admin().await;
    let schemas = Mutex::new(Vec::new());
    let schemas = &schemas;
    swr_scan_bridge::store::poll_state::conformance::run_all(move || {
        let schema = TestSchema::new();
        let name = schema.name.clone();
        schemas.lock().expect("schemas").push(schema);
        async move {
            let store = PostgresStore::connect(DATABASE_URL, 4, Some(&name))
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
    let _admin = admin().await;
    let schema = TestSchema::new();
    let store = PostgresStore::connect(DATABASE_URL, 8, Some(&schema.name))
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
    let admin = admin().await;
    let schema = TestSchema::new();
    let url = format!("{DATABASE_URL}?options=-csearch_path%3D{}", schema.name);
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
    let admin = admin().await;
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

/// The versions of `src/store/migrations/postgres/NNNN_name.sql`, in order.
fn migration_versions_on_disk() -> Vec<i64> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/migrations/postgres");
    let mut versions: Vec<i64> = std::fs::read_dir(dir)
        .expect("migrations directory")
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

#[tokio::test]
async fn queries_on_a_schema_never_migrated_are_query_errors() {
    let _admin = admin().await;
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
    let _admin = admin().await;
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
    let _admin = admin().await;
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
    let _admin = admin().await;
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
        api: "batch-scan",
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
                    .complete(&batch, &conformance::scanned(), T0)
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
            message.starts_with("cannot connect to PostgreSQL: error connecting to server: ")
                && message.contains("refused"),
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
            "timed out getting a PostgreSQL connection (Create)"
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
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(POSTGRES_ADDR).await {
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
    let _admin = admin().await;
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
    let admin = admin().await;
    let schema = TestSchema::new();
    let application = format!("bridge-{}", schema.name);
    let url = format!("{DATABASE_URL}?application_name={application}");
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
