//! PostgreSQL for multi-replica tests: a fresh database per test on the
//! machine's server, and a private throwaway cluster for tests that stop and
//! start the database.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The machine's PostgreSQL (trust auth); override with `SWR_SCAN_BRIDGE_TEST_PG`.
pub fn admin_url() -> String {
    std::env::var("SWR_SCAN_BRIDGE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database created for one test and dropped when it ends.
pub struct FreshDatabase {
    pub url: String,
    name: String,
}

impl FreshDatabase {
    pub async fn create() -> FreshDatabase {
        let name = format!("bridge_test_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {} is not reachable ({e}); start it with .ci/start-postgres",
                    admin_url()
                )
            });
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let base = admin_url();
        let server = base
            .rsplit_once('/')
            .map(|(server, _)| server)
            .unwrap_or(&base);
        FreshDatabase {
            url: format!("{server}/{name}"),
            name,
        }
    }

    /// Runs one SQL query on this database, returning the first column as text.
    pub async fn query_strings(&self, sql: &str) -> Vec<String> {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
            .query(sql, &[])
            .await
            .expect("query")
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect()
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        // Best effort, outside the test's runtime: psql exists wherever PostgreSQL does.
        let _ = Command::new("psql")
            .arg(admin_url())
            .arg("-qc")
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// A PostgreSQL cluster of the test's own, on its own port, that the test
/// may stop and start. Runs as the `postgres` user when the test runs as root.
pub struct PrivateCluster {
    pub port: u16,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

fn bin_dir() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql");
    let mut dirs: Vec<PathBuf> = versions
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL version")
}

fn as_postgres(program: &Path) -> Command {
    // SAFETY: getuid has no preconditions and cannot fail.
    let is_root = unsafe { libc::getuid() } == 0;
    if is_root {
        let mut command = Command::new("runuser");
        command.arg("-u").arg("postgres").arg("--").arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl PrivateCluster {
    pub fn start(port: u16) -> PrivateCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(dir.path());
                c
            },
            "chown cluster dir",
        );
        let mut initdb = as_postgres(&bin_dir().join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .arg("-A")
            .arg("trust")
            .arg("-U")
            .arg("postgres")
            .arg("--no-sync");
        run(initdb, "initdb");
        let cluster = PrivateCluster {
            port,
            data,
            _dir: dir,
        };
        cluster.resume();
        cluster
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let socket_dir = self.data.parent().expect("parent").to_path_buf();
        let mut start = as_postgres(&bin_dir().join("pg_ctl"));
        start
            .arg("-D")
            .arg(&self.data)
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
                self.port,
                socket_dir.display()
            ))
            .arg("-l")
            .arg(socket_dir.join("server.log"))
            .arg("-w")
            .arg("start");
        run(start, "pg_ctl start");
    }

    /// Stops it the way an operator's restart would (fast shutdown).
    pub fn halt(&self) {
        let mut stop = as_postgres(&bin_dir().join("pg_ctl"));
        stop.arg("-D")
            .arg(&self.data)
            .arg("-m")
            .arg("fast")
            .arg("-w")
            .arg("stop");
        run(stop, "pg_ctl stop");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let mut stop = as_postgres(&bin_dir().join("pg_ctl"));
        stop.arg("-D")
            .arg(&self.data)
            .arg("-m")
            .arg("immediate")
            .arg("stop");
        let _ = stop.output();
    }
}
