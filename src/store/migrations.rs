//! The schema steps both SQL stores apply: one numbered list. A step whose
//! SQL means the same in both dialects is one file in `migrations/both/`;
//! any other is written once per dialect (`migrations/sqlite/`,
//! `migrations/postgres/`). Keeping the list here holds the two dialects to
//! the same versions and names; each store's `migrate` module applies them
//! its own way.

/// A schema step, applied once, in version order.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// One step in both dialects.
struct Step {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// A [`Step`] read from its file(s) `NNNN_name.sql`:
/// `step!(5, "name", each_dialect "0005_name.sql")` reads
/// `migrations/sqlite/` and `migrations/postgres/`;
/// `step!(5, "name", both "0005_name.sql")` reads one file in
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

/// Every step, oldest first. Applied ones are never edited: a schema change is
/// a new `step!` with the next number and its file(s).
const STEPS: [Step; 6] = [
    step!(1, "initial", each_dialect "0001_initial.sql"),
    step!(2, "digests", each_dialect "0002_digests.sql"),
    step!(3, "poll_state", both "0003_poll_state.sql"),
    step!(4, "no_age_index", each_dialect "0004_no_age_index.sql"),
    step!(5, "pg_leaner_pending", each_dialect "0005_pg_leaner_pending.sql"),
    step!(6, "history", each_dialect "0006_history.sql"),
];

#[derive(Clone, Copy)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// The SQLite store's migrations, oldest first.
pub const SQLITE: [Migration; STEPS.len()] = in_dialect(Dialect::Sqlite);

/// The PostgreSQL store's migrations, oldest first.
pub const POSTGRES: [Migration; STEPS.len()] = in_dialect(Dialect::Postgres);

const fn in_dialect(dialect: Dialect) -> [Migration; STEPS.len()] {
    let mut migrations = [Migration {
        version: 0,
        name: "",
        sql: "",
    }; STEPS.len()];
    let mut index = 0;
    while index < STEPS.len() {
        let step = &STEPS[index];
        migrations[index] = Migration {
            version: step.version,
            name: step.name,
            sql: match dialect {
                Dialect::Sqlite => step.sqlite,
                Dialect::Postgres => step.postgres,
            },
        };
        index += 1;
    }
    migrations
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
        for (dialect, migrations) in [("sqlite", &SQLITE), ("postgres", &POSTGRES)] {
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
        let lines = objects
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
            .expect("sqlite_master rows");
        lines
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
    fn pending_skips_applied_versions_and_keeps_the_order() {
        let versions = |applied: &[i64]| -> Vec<i64> {
            pending(&SQLITE, applied).map(|m| m.version).collect()
        };
        assert_eq!(versions(&[]), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(versions(&[2]), vec![1, 3, 4, 5, 6]);
        assert_eq!(versions(&[1, 2, 3, 4, 5, 6, 99]), Vec::<i64>::new());
    }
}
