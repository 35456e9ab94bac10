//! The schema steps both SQL stores apply: one numbered list. A step is one
//! template in `migrations/both/` where the dialects differ only in a few
//! words (see [`PLACEHOLDERS`]); a step whose SQL differs throughout is
//! written once per dialect (`migrations/sqlite/`, `migrations/postgres/`).
//! Keeping the list here holds the two dialects to the same versions and
//! names; each store's `migrate` module applies them its own way.
//!
//! Steps are applied by version (no checksum of their text is kept), so a
//! step's file may be rewritten as long as the SQL each dialect runs builds
//! the same schema: `recorded/` holds the schema steps 1–6 built when each
//! dialect had its own files, and the tests compare against it.

use std::sync::LazyLock;

/// A schema step, applied once, in version order.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: String,
}

/// One step in both dialects: the text of its file(s), placeholders unrendered.
struct Step {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// A [`Step`] read from its file(s) `NNNN_name.sql`:
/// `step!(5, "name", each_dialect "0005_name.sql")` reads
/// `migrations/sqlite/` and `migrations/postgres/`;
/// `step!(5, "name", both "0005_name.sql")` reads one template in
/// `migrations/both/` for both stores.
macro_rules! step {
    ($version:literal, $name:literal, each_dialect $file:literal) => {
        step!(@read $version, $name, "sqlite", "postgres", $file)
    };
    ($version:literal, $name:literal, both $file:literal) => {
        step!(@read $version, $name, "both", "both", $file)
    };
    (@read $version:literal, $name:literal, $sqlite:literal, $postgres:literal, $file:literal) => {
        Step {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("migrations/", $sqlite, "/", $file)),
            postgres: include_str!(concat!("migrations/", $postgres, "/", $file)),
        }
    };
}

/// Every step, oldest first. A schema change is a new `step!` with the next
/// number and its file(s); an applied step's SQL is never changed.
const STEPS: [Step; 7] = [
    step!(1, "initial", both "0001_initial.sql"),
    step!(2, "digests", both "0002_digests.sql"),
    step!(3, "poll_state", both "0003_poll_state.sql"),
    step!(4, "no_age_index", each_dialect "0004_no_age_index.sql"),
    step!(5, "pg_leaner_pending", each_dialect "0005_pg_leaner_pending.sql"),
    step!(6, "history", both "0006_history.sql"),
    step!(7, "history_file", each_dialect "0007_history_file.sql"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// The words a template writes as `{{word}}`, and what each dialect runs for
/// them: (word, SQLite, PostgreSQL). Besides these, `{{sqlite:text}}` and
/// `{{postgres:text}}` stand for `text` in that dialect and nothing in the
/// other (PostgreSQL's extra constraints, each dialect's index names).
const PLACEHOLDERS: [(&str, &str, &str); 3] = [
    // SQLite may give the id of the newest deleted row to the next one:
    // harmless where nothing holds an id across deletes (history rows).
    (
        "id",
        "INTEGER PRIMARY KEY",
        "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    ),
    // AUTOINCREMENT: an id a stale handle may still hold is never given to a
    // new row. PostgreSQL identities never go back anyway.
    (
        "id_never_reused",
        "INTEGER PRIMARY KEY AUTOINCREMENT",
        "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    ),
    ("json", "TEXT", "JSONB"),
];

/// The SQLite store's migrations, oldest first.
pub static SQLITE: LazyLock<Vec<Migration>> = LazyLock::new(|| in_dialect(Dialect::Sqlite));

/// The PostgreSQL store's migrations, oldest first.
pub static POSTGRES: LazyLock<Vec<Migration>> = LazyLock::new(|| in_dialect(Dialect::Postgres));

fn in_dialect(dialect: Dialect) -> Vec<Migration> {
    STEPS
        .iter()
        .map(|step| Migration {
            version: step.version,
            name: step.name,
            sql: render(
                match dialect {
                    Dialect::Sqlite => step.sqlite,
                    Dialect::Postgres => step.postgres,
                },
                dialect,
            ),
        })
        .collect()
}

/// `template` with each placeholder replaced by `dialect`'s text.
///
/// Templates are compiled in, and the tests render every one in both
/// dialects: a malformed placeholder is a bug in this crate, never input, so
/// it panics (at the first use of the list) rather than returning an error.
fn render(template: &str, dialect: Dialect) -> String {
    let mut sql = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        sql.push_str(&rest[..open]);
        let inside = &rest[open + 2..];
        let Some(close) = inside.find("}}") else {
            panic!("a migration template opens a placeholder it never closes");
        };
        sql.push_str(placeholder(&inside[..close], dialect));
        rest = &inside[close + 2..];
    }
    sql.push_str(rest);
    sql
}

fn placeholder(inside: &str, dialect: Dialect) -> &str {
    if let Some((only_in, text)) = inside.split_once(':') {
        let only_in = match only_in {
            "sqlite" => Dialect::Sqlite,
            "postgres" => Dialect::Postgres,
            unknown => panic!("migration template names an unknown dialect {unknown:?}"),
        };
        return if only_in == dialect { text } else { "" };
    }
    match PLACEHOLDERS.iter().find(|(word, ..)| *word == inside) {
        Some((_, sqlite, _)) if dialect == Dialect::Sqlite => sqlite,
        Some((_, _, postgres)) => postgres,
        None => panic!("migration template uses an unknown placeholder {inside:?}"),
    }
}

/// The steps of `migrations` whose versions `applied` does not hold, in order.
pub fn pending<'a>(
    migrations: &'a [Migration],
    applied: &'a [i64],
) -> impl Iterator<Item = &'a Migration> + 'a {
    migrations
        .iter()
        .filter(|migration| !applied.contains(&migration.version))
}

/// The migration files `dialect` runs (its own and the shared ones), sorted
/// by name.
#[cfg(test)]
pub(crate) fn files_on_disk(dialect: &str) -> Vec<String> {
    let mut names: Vec<String> = [dialect, "both"]
        .iter()
        .flat_map(|dir| {
            let dir = format!("{}/src/store/migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read_dir(dir).expect("migrations directory")
        })
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_lists_exactly_its_files_numbered_from_one_without_gaps() {
        for (dialect, migrations) in [("sqlite", &*SQLITE), ("postgres", &*POSTGRES)] {
            let listed: Vec<String> = migrations
                .iter()
                .map(|m| format!("{:04}_{}.sql", m.version, m.name))
                .collect();
            assert_eq!(listed, files_on_disk(dialect), "{dialect}");
            for (index, migration) in migrations.iter().enumerate() {
                assert_eq!(migration.version, index as i64 + 1, "{}", migration.name);
                assert!(
                    !migration.sql.trim().is_empty(),
                    "{dialect} {}",
                    migration.name
                );
            }
        }
    }

    /// Steps 1–6 were rewritten from one file per dialect into templates
    /// (`both/`); these records were taken from the files as they were, so
    /// the templates must build exactly the schema already deployed.
    const RECORDED_AT_0006: usize = 6;

    /// The SQLite schema after the first `RECORDED_AT_0006` steps: one line
    /// per object, its SQL with white space folded.
    fn sqlite_schema_after_0006() -> String {
        let conn = rusqlite::Connection::open_in_memory().expect("in-memory database");
        for migration in SQLITE.iter().take(RECORDED_AT_0006) {
            conn.execute_batch(&migration.sql)
                .unwrap_or_else(|error| panic!("{}: {error}", migration.name));
        }
        let mut objects = conn
            .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
            .expect("sqlite_master");
        objects
            .query_map([], |row| {
                let sql: Option<String> = row.get(3)?;
                Ok(format!(
                    "{} {} on {}: {}\n",
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    fold_white_space(sql.as_deref().unwrap_or("-"))
                ))
            })
            .expect("read sqlite_master")
            .collect::<rusqlite::Result<String>>()
            .expect("sqlite_master rows")
    }

    fn fold_white_space(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn sqlite_steps_up_to_0006_build_the_recorded_schema() {
        let recorded = include_str!("migrations/recorded/sqlite_schema_at_0006.txt");
        let built = sqlite_schema_after_0006();
        assert_eq!(built, recorded);
    }

    #[test]
    fn placeholders_render_each_dialects_text() {
        let template = "id {{id_never_reused}}, doc {{json}}{{postgres: CHECK (doc IS NOT NULL)}}, \
                        INDEX {{sqlite:by_doc}}{{postgres:doc}}";
        assert_eq!(
            render(template, Dialect::Sqlite),
            "id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT, INDEX by_doc"
        );
        assert_eq!(
            render(template, Dialect::Postgres),
            "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
             doc JSONB CHECK (doc IS NOT NULL), INDEX doc"
        );
    }

    #[test]
    fn every_step_renders_without_a_placeholder_left() {
        for migration in SQLITE.iter().chain(POSTGRES.iter()) {
            assert!(!migration.sql.contains("{{"), "{}", migration.name);
            assert!(!migration.sql.contains("}}"), "{}", migration.name);
        }
    }

    #[test]
    #[should_panic(expected = "unknown placeholder \"jsonb\"")]
    fn an_unknown_placeholder_is_a_bug_caught_at_first_use() {
        render("{{jsonb}}", Dialect::Postgres);
    }

    #[test]
    fn pending_skips_applied_versions_and_keeps_the_order() {
        let versions = |applied: &[i64]| -> Vec<i64> {
            pending(&SQLITE, applied).map(|m| m.version).collect()
        };
        assert_eq!(versions(&[]), vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(versions(&[2]), vec![1, 3, 4, 5, 6, 7]);
        assert_eq!(versions(&[1, 2, 3, 4, 5, 6, 7, 99]), Vec::<i64>::new());
    }
}
