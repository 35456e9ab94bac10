//! The connection pool: every connection TLS as `store.url` asks, placed in
//! the store's schema, failing fast while the database is away and healing
//! by itself when it returns (a failover's or restart's dead connections
//! are found by the checks before use and replaced).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Hook, HookError, Manager, ManagerConfig, Metrics, Pool, RecyclingMethod, Runtime,
};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::connect_config::ConnectConfig;
use super::tls::MakeRustlsConnect;
use crate::store::StoreError;

/// How long a caller waits for a connection (a free one, or a new one
/// being opened) before the store answers `Unavailable`.
pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Checking a pooled connection is one empty round trip; one that takes
/// longer than this is presumed dead and replaced.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection handed out again within this long of its last checkout is
/// not checked with a round trip: on a busy pool that check cost 0.6 ms of
/// every group commit's ~3 ms (BENCHMARKS.md), and a connection used a
/// moment ago is alive unless its death is already known (`is_closed`, which
/// every checkout still looks at). One that died in between fails its
/// statement on a closed connection, and the callers whose statements may
/// run twice retry once on a fresh one (`enqueue::write_bounded`).
const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Builds the pool without connecting: the database may be down at start-up,
/// and the first use reports that as `Unavailable` like any later outage.
/// TLS roots are loaded now: a missing root file fails here, naming the server.
pub(super) fn build(
    connect: &ConnectConfig,
    pool_size: usize,
    schema: Option<&str>,
) -> Result<Pool, StoreError> {
    if pool_size == 0 {
        return Err(StoreError::Query(
            "store.pool_size must be at least 1 for PostgreSQL".to_string(),
        ));
    }
    let tls = MakeRustlsConnect::new(connect).map_err(|error| {
        StoreError::Query(format!("PostgreSQL at {}: {error}", connect.server()))
    })?;
    let mut pg_config = connect.pg.clone();
    if pg_config.get_connect_timeout().is_none() {
        pg_config.connect_timeout(ACQUIRE_TIMEOUT);
    }
    if pg_config.get_application_name().is_none() {
        pg_config.application_name("swr-scan-bridge");
    }
    let session = SessionSetup {
        tls,
        set_search_path: schema.map(|schema| format!("SET search_path TO {}", quote_ident(schema))),
    };
    // Fast: a checkout refuses connections known to be closed; the hook below
    // adds the empty round trip for connections idle long enough to have
    // been cut without anyone noticing (a failover, a NAT timeout).
    let manager = Manager::from_connect(
        pg_config,
        session,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(pool_size)
        .pre_recycle(Hook::async_fn(verify_if_idle))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(ACQUIRE_TIMEOUT))
        .create_timeout(Some(ACQUIRE_TIMEOUT))
        .recycle_timeout(Some(RECYCLE_TIMEOUT))
        .build()
        .map_err(|error| StoreError::Query(format!("cannot build the PostgreSQL pool: {error}")))
}

/// The round trip that proves a connection idle for [`VERIFY_AFTER_IDLE`]
/// still reaches a live server; a failed or slow one discards it, and the
/// pool opens or hands out another.
fn verify_if_idle<'a>(
    client: &'a mut ClientWrapper,
    metrics: &'a Metrics,
) -> BoxFuture<'a, Result<(), HookError>> {
    Box::pin(async move {
        if metrics.last_used() < VERIFY_AFTER_IDLE {
            return Ok(());
        }
        match tokio::time::timeout(RECYCLE_TIMEOUT, client.simple_query("")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(HookError::Backend(error)),
            Err(_) => Err(HookError::message("the connection check timed out")),
        }
    })
}

/// Checks a schema name given in configuration or by a test.
pub(super) fn validate_schema(schema: &str) -> Result<(), StoreError> {
    // PostgreSQL truncates identifiers to 63 bytes; two names that differ only
    // after that would silently share a schema.
    if schema.is_empty() || schema.len() > 63 || schema.contains('\0') {
        return Err(StoreError::Query(format!(
            "schema name {schema:?} must be 1 to 63 bytes without NUL"
        )));
    }
    Ok(())
}

/// An SQL identifier, quoted so that any name is taken literally.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opens a connection and, when the store has its own schema, points the
/// session's search_path at it before anyone may use the connection.
struct SessionSetup {
    tls: MakeRustlsConnect,
    set_search_path: Option<String>,
}

impl deadpool_postgres::Connect for SessionSetup {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let pg_config = pg_config.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let (client, connection) = pg_config.connect(tls).await?;
            // The connection future drives the socket; the client is only a handle.
            let connection_task = tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%error, "PostgreSQL connection ended with an error");
                }
            });
            if let Some(set_search_path) = &self.set_search_path
                && let Err(error) = client.batch_execute(set_search_path).await
            {
                connection_task.abort();
                return Err(error);
            }
            Ok((client, connection_task))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_literally() {
        assert_eq!(quote_ident("test_1"), "\"test_1\"");
        assert_eq!(quote_ident("Bridge"), "\"Bridge\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(validate_schema("bridge").is_ok());
        assert!(validate_schema(&"x".repeat(63)).is_ok());
        assert!(validate_schema("").is_err());
        assert!(validate_schema(&"x".repeat(64)).is_err());
        assert!(validate_schema("a\0b").is_err());
    }

    fn parsed(url: &str) -> ConnectConfig {
        super::super::connect_config::parse(url).expect("valid URL")
    }

    #[tokio::test]
    async fn a_zero_pool_size_is_refused() {
        assert!(matches!(
            build(&parsed("postgres://u@h/db"), 0, None),
            Err(StoreError::Query(_))
        ));
    }

    #[tokio::test]
    async fn a_missing_root_file_fails_at_once_naming_the_server() {
        let error = build(
            &parsed("postgres://u:hunter2@db.example:6432/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
            2,
            None,
        )
        .expect_err("no root file");
        let message = error.to_string();
        assert!(
            message.starts_with(
                "store query failed: PostgreSQL at db.example:6432: sslrootcert /nonexistent/ca.pem: "
            ),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[tokio::test]
    async fn building_the_pool_does_not_connect() {
        // Port 1 on localhost refuses connections; building must still succeed.
        let pool = build(
            &parsed("postgres://postgres@127.0.0.1:1/test"),
            2,
            Some("s"),
        )
        .expect("pool without connecting");
        assert_eq!(pool.status().size, 0);
    }
}
