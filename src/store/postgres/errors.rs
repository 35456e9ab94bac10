//! Which PostgreSQL failures mean "try again later" ([`StoreError::Unavailable`],
//! answered 503 so senders retry) and which mean a query that retrying will not
//! fix ([`StoreError::Query`]).

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::error_chain;
use crate::store::StoreError;

/// A failure while using a connection: the network and server-side
/// transients are `Unavailable`, everything else is `Query`.
pub(super) fn from_postgres(error: tokio_postgres::Error) -> StoreError {
    let message = describe(&error);
    if is_transient(&error) {
        StoreError::Unavailable(message)
    } else {
        StoreError::Query(message)
    }
}

/// Like [`from_postgres`], but a permanent failure is reported as a failed
/// migration: the schema could not be brought up to date.
pub(super) fn from_migration(error: tokio_postgres::Error) -> StoreError {
    match from_postgres(error) {
        StoreError::Query(message) => StoreError::Migration(message),
        other => other,
    }
}

/// No connection could be had. Whatever the cause (server down, refused,
/// unknown database, bad password, pool exhausted), the store cannot serve
/// now and may later: `/readyz` turns not ready and webhooks get 503.
/// `server` names the database's hosts (never credentials), so that a TLS
/// or network problem says where it happened.
pub(super) fn from_pool(error: PoolError, server: &str) -> StoreError {
    let message = match error {
        PoolError::Backend(error) => {
            format!(
                "cannot connect to PostgreSQL at {server}: {}",
                describe(&error)
            )
        }
        PoolError::Timeout(kind) => {
            format!("timed out getting a PostgreSQL connection to {server} ({kind:?})")
        }
        PoolError::Closed => "the PostgreSQL connection pool is closed".to_string(),
        PoolError::NoRuntimeSpecified => {
            "the PostgreSQL connection pool has no runtime for its timeouts".to_string()
        }
        PoolError::PostCreateHook(error) => {
            format!("a new PostgreSQL connection could not be set up: {error}")
        }
    };
    StoreError::Unavailable(message)
}

fn is_transient(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(db_error) = error.as_db_error() {
        return is_transient_sqlstate(db_error.code());
    }
    // Not an answer from the server: either the network (I/O, connect,
    // timeouts) or our own encoding of values, which no retry can fix.
    if error_chain::causes(error)
        .skip(1)
        .any(|cause| cause.is::<std::io::Error>())
    {
        return true;
    }
    error.to_string().starts_with("timeout")
}

/// SQLSTATEs that describe the server's condition rather than the query.
fn is_transient_sqlstate(code: &SqlState) -> bool {
    let code = code.code();
    // 08: connection exception; 53: insufficient resources (too many
    // connections, disk full); 57P: shutdown, crash, still starting.
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || [
            SqlState::T_R_SERIALIZATION_FAILURE.code(),
            SqlState::T_R_DEADLOCK_DETECTED.code(),
            SqlState::LOCK_NOT_AVAILABLE.code(),
            SqlState::QUERY_CANCELED.code(),
            // A standby that has not been promoted yet (failover in progress).
            SqlState::READ_ONLY_SQL_TRANSACTION.code(),
        ]
        .contains(&code)
}

/// The error with its SQLSTATE when the server sent one, else with its causes
/// (tokio-postgres prints only "error connecting to server", not why).
/// Neither contains the connection string's values, so no password leaks.
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db_error) = error.as_db_error() {
        return format!(
            "{} (SQLSTATE {})",
            db_error.message(),
            db_error.code().code()
        );
    }
    error_chain::with_causes(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_conditions_are_transient() {
        for code in [
            SqlState::CONNECTION_FAILURE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::READ_ONLY_SQL_TRANSACTION,
        ] {
            assert!(is_transient_sqlstate(&code), "{}", code.code());
        }
    }

    #[test]
    fn query_mistakes_are_not_transient() {
        for code in [
            SqlState::UNDEFINED_TABLE,
            SqlState::SYNTAX_ERROR,
            SqlState::UNIQUE_VIOLATION,
            SqlState::NOT_NULL_VIOLATION,
            SqlState::INVALID_SCHEMA_NAME,
        ] {
            assert!(!is_transient_sqlstate(&code), "{}", code.code());
        }
    }

    #[test]
    fn pool_failures_are_unavailable() {
        let timeout = from_pool(
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait),
            "db:5432",
        );
        assert!(
            matches!(&timeout, StoreError::Unavailable(message) if message == "timed out getting a PostgreSQL connection to db:5432 (Wait)"),
            "{timeout:?}"
        );
        assert!(matches!(
            from_pool(PoolError::Closed, "db:5432"),
            StoreError::Unavailable(_)
        ));
    }
}
