//! PostgreSQL for the store and replica tests (shared by `tests/api` and
//! `tests/postgres_store.rs`): the machine's server, or else a private
//! throwaway cluster started from the machine's PostgreSQL binaries, so that
//! `cargo test` passes on a fresh machine. Only where no PostgreSQL is
//! installed at all are these tests skipped, with one loud line, and under
//! `CI=true` that is a failure instead.

#![allow(dead_code)] // each test binary uses its own part of this file

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The machine's PostgreSQL (trust auth); override with `SWR_SCAN_BRIDGE_TEST_PG`.
const MACHINE_SERVER: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A PostgreSQL server the tests may create databases and schemas on.
#[derive(Debug)]
pub struct TestServer {
    /// `postgres://user@host:port` without a database.
    base: String,
    /// `host:port`, for TCP relays in front of it.
    pub addr: SocketAddr,
}

impl TestServer {
    /// A URL for `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.base)
    }

    /// The database the tests work in (schemas of their own inside it).
    pub fn test_url(&self) -> String {
        self.url("test")
    }
}

/// The server for this test binary, started on first use when needed;
/// `None` (after one loud line) when no PostgreSQL is installed. Panics
/// instead under `CI=true`, and when `SWR_SCAN_BRIDGE_TEST_PG` names a
/// server that does not answer.
pub fn test_server() -> Option<&'static TestServer> {
    static SERVER: OnceLock<Option<TestServer>> = OnceLock::new();
    SERVER.get_or_init(find_or_start_server).as_ref()
}

fn find_or_start_server() -> Option<TestServer> {
    if let Ok(url) = std::env::var("SWR_SCAN_BRIDGE_TEST_PG") {
        let server = server_at(&url).unwrap_or_else(|| {
            panic!("SWR_SCAN_BRIDGE_TEST_PG={url} is not a postgres://user@host:port/db URL")
        });
        assert!(
            answers(server.addr),
            "SWR_SCAN_BRIDGE_TEST_PG={url}: nothing answers at {}",
            server.addr
        );
        return Some(server);
    }
    let machine = server_at(MACHINE_SERVER).expect("the default test server URL");
    if answers(machine.addr) {
        return Some(machine);
    }
    if bin_dir().is_none() {
        let message = format!(
            "!!! SKIPPING the PostgreSQL tests: nothing answers at {} and no PostgreSQL \
             server binaries (initdb, pg_ctl) are installed; install PostgreSQL or set \
             SWR_SCAN_BRIDGE_TEST_PG !!!",
            machine.addr
        );
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!("{message} (a failure under CI=true)");
        }
        loud(&message);
        return None;
    }
    loud(&format!(
        "postgres tests: nothing answers at {}; starting a private throwaway cluster",
        machine.addr
    ));
    Some(start_throwaway_server())
}

/// One line on the terminal even from a passing test: the test harness
/// captures `eprintln!`, not writes to the stderr handle.
pub fn loud(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// `postgres://user@host:port/db` → the server without its database.
fn server_at(url: &str) -> Option<TestServer> {
    let (base, _database) = url.rsplit_once('/')?;
    let authority = base.rsplit_once('@').map_or(base, |(_, host)| host);
    let authority = authority
        .strip_prefix("postgres://")
        .or_else(|| authority.strip_prefix("postgresql://"))
        .unwrap_or(authority);
    let addr = authority.to_socket_addrs().ok()?.next()?;
    Some(TestServer {
        base: base.to_string(),
        addr,
    })
}

fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// The cluster behind [`test_server`] when the machine's is not running:
/// started once per test binary and stopped when the binary exits.
fn start_throwaway_server() -> TestServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let cluster = PrivateCluster::start(port).expect("PostgreSQL binaries were found");
    cluster.serve_tls();
    cluster.create_database("test");
    static THROWAWAY: OnceLock<PrivateCluster> = OnceLock::new();
    let cluster = THROWAWAY.get_or_init(|| cluster);
    extern "C" fn stop_throwaway() {
        if let Some(cluster) = THROWAWAY.get() {
            cluster.stop_now();
            let _ = std::fs::remove_dir_all(cluster.data.parent().unwrap_or(&cluster.data));
        }
    }
    // SAFETY: registers a plain function without arguments, run once at exit.
    unsafe {
        libc::atexit(stop_throwaway);
    }
    server_at(&cluster.url("test")).expect("the cluster's URL")
}

/// A database created for one test and dropped when it ends.
pub struct FreshDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl FreshDatabase {
    /// `None` when no PostgreSQL is installed (see [`test_server`]).
    pub async fn create() -> Option<FreshDatabase> {
        let server = test_server()?;
        let admin_url = server.test_url();
        let name = format!("bridge_test_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is not reachable ({e})"));
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        Some(FreshDatabase {
            url: server.url(&name),
            admin_url,
            name,
        })
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
            .arg(&self.admin_url)
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

/// The newest installed server's binaries: Debian's
/// `/usr/lib/postgresql/<major>/bin`, else wherever `initdb` is on PATH.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry
                .file_name()
                .to_str()?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    })
}

fn server_binary(name: &str) -> PathBuf {
    bin_dir().expect("PostgreSQL server binaries").join(name)
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() == 0 }
}

fn as_postgres(program: &Path) -> Command {
    if is_root() {
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
    /// `None` when no PostgreSQL is installed (after the loud line of
    /// [`test_server`]).
    pub fn start(port: u16) -> Option<PrivateCluster> {
        if bin_dir().is_none() {
            test_server()?;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        if is_root() {
            let mut chown = Command::new("chown");
            chown.arg("postgres:postgres").arg(dir.path());
            run(chown, "chown cluster dir");
        }
        let mut initdb = as_postgres(&server_binary("initdb"));
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
        Some(cluster)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn create_database(&self, name: &str) {
        let mut createdb = as_postgres(&server_binary("createdb"));
        createdb
            .arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg("postgres")
            .arg(name);
        run(createdb, "createdb");
    }

    /// Serves TLS with a self-signed certificate for `localhost`, as the
    /// machine's Debian cluster does, when `openssl` is there to make one.
    fn serve_tls(&self) {
        let certificate = self.data.join("server.crt");
        let key = self.data.join("server.key");
        let mut openssl = as_postgres(Path::new("openssl"));
        openssl
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            // An end-entity certificate, as servers present (rustls refuses a CA).
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&certificate);
        match openssl.output() {
            Ok(output) if output.status.success() => {}
            _ => {
                loud("postgres tests: no openssl; the private cluster serves no TLS");
                return;
            }
        }
        // PostgreSQL refuses a key others may read.
        let mut private = as_postgres(Path::new("chmod"));
        private.arg("600").arg(&key);
        run(private, "chmod server.key");
        let mut ssl_on = as_postgres(&server_binary("psql"));
        ssl_on
            .arg(self.url("postgres"))
            .arg("-qc")
            .arg("ALTER SYSTEM SET ssl = on");
        run(ssl_on, "enable ssl");
        let mut reload = as_postgres(&server_binary("pg_ctl"));
        reload.arg("-D").arg(&self.data).arg("reload");
        run(reload, "pg_ctl reload");
    }

    /// Starts (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let socket_dir = self.data.parent().expect("parent").to_path_buf();
        let mut start = as_postgres(&server_binary("pg_ctl"));
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
        let mut stop = as_postgres(&server_binary("pg_ctl"));
        stop.arg("-D")
            .arg(&self.data)
            .arg("-m")
            .arg("fast")
            .arg("-w")
            .arg("stop");
        run(stop, "pg_ctl stop");
    }

    fn stop_now(&self) {
        let mut stop = as_postgres(&server_binary("pg_ctl"));
        stop.arg("-D")
            .arg(&self.data)
            .arg("-m")
            .arg("immediate")
            .arg("stop");
        let _ = stop.output();
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop_now();
    }
}
