//! Schema migrations: numbered SQL files compiled into the binary, applied in
//! order under an advisory lock so that replicas starting together take turns.

use deadpool_postgres::Transaction;

use super::errors::from_migration;
use super::pool::quote_ident;
use crate::store::StoreError;
use crate::store::migrations;

/// Database-wide: migrations of different schemas wait for each other too,
/// which costs nothing and keeps `CREATE SCHEMA` itself race-free.
const MIGRATION_LOCK: i64 = i64::from_be_bytes(*b"swrmigra");

/// Brings the schema up to date inside the caller's transaction; the caller
/// commits. `schema` is created when given; without it, the first schema of
/// the session's search_path is created when it does not exist yet.
pub(super) async fn run(tx: &Transaction<'_>, schema: Option<&str>) -> Result<(), StoreError> {
    tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        .await
        .map_err(from_migration)?;
    ensure_schema(tx, schema).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT      PRIMARY KEY,
             name       TEXT        NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(from_migration)?;
    let applied: Vec<i64> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(from_migration)?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(from_migration)?;

    for migration in migrations::pending(&migrations::POSTGRES, &applied) {
        tx.batch_execute(&migration.sql)
            .await
            .map_err(|error| match from_migration(error) {
                StoreError::Migration(reason) => StoreError::Migration(format!(
                    "{:04}_{}: {reason}",
                    migration.version, migration.name
                )),
                unavailable => unavailable,
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(from_migration)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied PostgreSQL migration"
        );
    }

    let known = migrations::POSTGRES
        .last()
        .map_or(0, |migration| migration.version);
    if let Some(newest) = applied
        .iter()
        .copied()
        .max()
        .filter(|newest| *newest > known)
    {
        // A newer replica already migrated (rolling upgrade): carry on, the
        // schema only ever grows in ways older code can live with.
        tracing::warn!(
            database_version = newest,
            known_version = known,
            "the schema is newer than this binary"
        );
    }
    Ok(())
}

async fn ensure_schema(tx: &Transaction<'_>, schema: Option<&str>) -> Result<(), StoreError> {
    let name = match schema {
        Some(schema) => schema.to_string(),
        None => {
            let row = tx
                .query_one(
                    "SELECT current_schema()::text, current_setting('search_path')",
                    &[],
                )
                .await
                .map_err(from_migration)?;
            let current: Option<String> = row.try_get(0).map_err(from_migration)?;
            if current.is_some() {
                return Ok(());
            }
            let search_path: String = row.try_get(1).map_err(from_migration)?;
            first_schema(&search_path).ok_or_else(|| {
                StoreError::Migration(format!(
                    "search_path {search_path:?} names no schema to create the tables in"
                ))
            })?
        }
    };
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(&name)
    ))
    .await
    .map_err(from_migration)
}

/// The first schema named in a `search_path` setting, as PostgreSQL reads it:
/// unquoted names fold to lower case, quoted ones are literal, `$user` is
/// skipped (it names a schema only when one exists for the user).
fn first_schema(search_path: &str) -> Option<String> {
    let mut rest = search_path;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            return None;
        }
        let (name, after) = if let Some(inner) = rest.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = inner.char_indices();
            let mut end = inner.len();
            while let Some((index, c)) = chars.next() {
                if c == '"' {
                    if inner[index + 1..].starts_with('"') {
                        name.push('"');
                        chars.next();
                    } else {
                        end = index + 1;
                        break;
                    }
                } else {
                    name.push(c);
                }
            }
            (name, &inner[end..])
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            (rest[..end].trim().to_lowercase(), &rest[end..])
        };
        rest = after;
        if !name.is_empty() && name != "$user" {
            return Some(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_schema_follows_postgres_reading_of_search_path() {
        assert_eq!(first_schema("bridge").as_deref(), Some("bridge"));
        assert_eq!(first_schema("Bridge, public").as_deref(), Some("bridge"));
        assert_eq!(first_schema("\"$user\", public").as_deref(), Some("public"));
        assert_eq!(first_schema("$user,x").as_deref(), Some("x"));
        assert_eq!(
            first_schema("\"My \"\"Q\"\" s\", public").as_deref(),
            Some("My \"Q\" s")
        );
        assert_eq!(first_schema("  test_ab12 ").as_deref(), Some("test_ab12"));
        assert_eq!(first_schema(""), None);
        assert_eq!(first_schema("\"$user\""), None);
    }
}
