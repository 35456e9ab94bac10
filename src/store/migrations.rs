//! The schema steps both SQL stores apply: one numbered list, each step
//! written once per dialect (`migrations/sqlite/`, `migrations/postgres/`).
//! Keeping the list here holds the two dialects to the same versions and names;
//! each store's `migrate` module applies them its own way.

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

/// Every step, oldest first. Applied ones are never edited: a schema change is
/// a new file `NNNN_name.sql` in each dialect's directory, with the next number.
const STEPS: [Step; 5] = [
    Step {
        version: 1,
        name: "initial",
        sqlite: include_str!("migrations/sqlite/0001_initial.sql"),
        postgres: include_str!("migrations/postgres/0001_initial.sql"),
    },
    Step {
        version: 2,
        name: "digests",
        sqlite: include_str!("migrations/sqlite/0002_digests.sql"),
        postgres: include_str!("migrations/postgres/0002_digests.sql"),
    },
    Step {
        version: 3,
        name: "poll_state",
        sqlite: include_str!("migrations/sqlite/0003_poll_state.sql"),
        postgres: include_str!("migrations/postgres/0003_poll_state.sql"),
    },
    Step {
        version: 4,
        name: "no_age_index",
        sqlite: include_str!("migrations/sqlite/0004_no_age_index.sql"),
        postgres: include_str!("migrations/postgres/0004_no_age_index.sql"),
    },
    Step {
        version: 5,
        name: "history",
        sqlite: include_str!("migrations/sqlite/0005_history.sql"),
        postgres: include_str!("migrations/postgres/0005_history.sql"),
    },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dialect: &str) -> Vec<String> {
        let dir = format!(
            "{}/src/store/migrations/{dialect}",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations directory")
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

    #[test]
    fn each_dialect_lists_exactly_its_files_numbered_from_one_without_gaps() {
        for (dialect, migrations) in [("sqlite", &SQLITE), ("postgres", &POSTGRES)] {
            let listed: Vec<String> = migrations
                .iter()
                .map(|m| format!("{:04}_{}.sql", m.version, m.name))
                .collect();
            assert_eq!(listed, files_in(dialect), "{dialect}");
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

    #[test]
    fn pending_skips_applied_versions_and_keeps_the_order() {
        let versions = |applied: &[i64]| -> Vec<i64> {
            pending(&SQLITE, applied).map(|m| m.version).collect()
        };
        assert_eq!(versions(&[]), vec![1, 2, 3, 4, 5]);
        assert_eq!(versions(&[2]), vec![1, 3, 4, 5]);
        assert_eq!(versions(&[1, 2, 3, 4, 5, 99]), Vec::<i64>::new());
    }
}
