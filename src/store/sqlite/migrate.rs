//! The schema: versioned migrations, applied once each.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use super::connection::immediate;
use crate::store::Millis;
use crate::store::migrations::{SQLITE, pending};

pub(super) use crate::store::migrations::Migration;

/// Every migration, oldest first.
pub(super) fn migrations() -> &'static [Migration] {
    &SQLITE
}

const SCHEMA_MIGRATIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT   NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub(super) enum MigrationFailure {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("migration {:04}_{} failed: {err}", migration.version, migration.name)]
    Step {
        migration: Migration,
        err: rusqlite::Error,
    },
    #[error(
        "the database has migration {version:04}_{name}, which this version does not know: \
         it was upgraded by a newer bridge"
    )]
    Unknown { version: i64, name: String },
    #[error(
        "migration {:04} is recorded as {recorded:?} but this version calls it {:?}",
        migration.version,
        migration.name
    )]
    Renamed {
        migration: Migration,
        recorded: String,
    },
}

/// Applies the missing migrations in one `BEGIN IMMEDIATE` transaction, so a
/// second process starting at the same moment waits and then finds nothing to do.
/// Returns the versions it applied.
pub(super) fn apply_migrations(
    conn: &mut Connection,
    migrations: &[Migration],
    now: Millis,
) -> Result<Vec<i64>, MigrationFailure> {
    let tx = immediate(conn)?;
    tx.execute_batch(SCHEMA_MIGRATIONS_DDL)?;
    let recorded: Vec<(i64, String)> = tx
        .prepare("SELECT version, name FROM schema_migrations ORDER BY version")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (version, name) in &recorded {
        match migrations.iter().find(|m| m.version == *version) {
            None => {
                return Err(MigrationFailure::Unknown {
                    version: *version,
                    name: name.clone(),
                });
            }
            Some(migration) if migration.name != name => {
                return Err(MigrationFailure::Renamed {
                    migration: migration.clone(),
                    recorded: name.clone(),
                });
            }
            Some(_) => {}
        }
    }
    let mut applied = Vec::new();
    let recorded_versions: Vec<i64> = recorded.iter().map(|(version, _)| *version).collect();
    for migration in pending(migrations, &recorded_versions) {
        tx.execute_batch(&migration.sql)
            .map_err(|err| MigrationFailure::Step {
                migration: migration.clone(),
                err,
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            (migration.version, migration.name, now),
        )?;
        applied.push(migration.version);
    }
    tx.commit()?;
    Ok(applied)
}

pub(super) fn wall_clock_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| Millis::try_from(elapsed.as_millis()).unwrap_or(Millis::MAX))
        .unwrap_or(0)
}
