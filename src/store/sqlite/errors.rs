//! SQLite failures as the store reports them.

use std::path::Path;

use rusqlite::ErrorCode;

use crate::store::StoreError;

/// A SQLite error as the store reports it: unavailable (retry later) or a
/// failed query.
pub(super) fn sql_failure(
    path: &Path,
    operation: &'static str,
    err: &rusqlite::Error,
) -> StoreError {
    if is_unavailable(err) {
        StoreError::Unavailable(format!(
            "sqlite database {}: {operation}: {err}",
            path.display()
        ))
    } else {
        StoreError::Query(format!("{operation}: {err}"))
    }
}

pub(super) fn panic_reason(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Errors that mean "this file cannot be used right now" (locked too long, not
/// openable, disk trouble) rather than "this statement is wrong".
fn is_unavailable(err: &rusqlite::Error) -> bool {
    match err {
        rusqlite::Error::SqliteFailure(failure, _) => matches!(
            failure.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::NotADatabase
        ),
        _ => false,
    }
}
