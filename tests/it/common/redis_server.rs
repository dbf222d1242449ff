//! A private `redis-server` per test, and a private 3-master Redis Cluster, for integration
//! tests that need isolation and fault injection (kill, `SIGSTOP` freeze, restart).
//!
//! Std only. Every server listens on `127.0.0.1` on a free port, keeps nothing on disk
//! (`--save '' --appendonly no`), works in its own temporary directory and logs there
//! (`redis.log`); a panic while starting includes the tail of that log. Dropping a
//! [`RedisServer`] thaws it, kills it, waits for it and removes its directory.
//!
//! The waits here (polling with short `std::thread::sleep`s, each bounded) are test setup,
//! not test logic.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::env;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server may take to answer `PING` after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `restart` keeps retrying while the old port is still unavailable.
const RESTART_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new cluster may take to report `cluster_state:ok` on every node.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(20);
/// The bound on one `redis-cli` run (a frozen server would otherwise hang it forever).
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// The bound on `redis-cli --cluster create`.
const CLUSTER_CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// The pause between two polls.
const POLL: Duration = Duration::from_millis(20);
/// How many fresh ports `start` tries when redis cannot bind the one it was given.
const START_ATTEMPTS: usize = 8;
/// Redis's cluster bus listens on the data port plus this.
const CLUSTER_BUS_OFFSET: u16 = 10_000;
/// The number of log lines quoted in panic messages.
const LOG_TAIL_LINES: usize = 40;

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

/// The path of an executable file called `name` on `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Says why a Redis test is skipped, or fails it when `BULWARK_REQUIRE_REDIS` is set (CI sets
/// it, so the Redis tests there run for real or fail, never pass by skipping).
fn skip(reason: &str) {
    if std::env::var_os("BULWARK_REQUIRE_REDIS").is_some() {
        panic!("{reason}, but BULWARK_REQUIRE_REDIS is set");
    }
    eprintln!("{reason}");
}

/// Whether a `redis-server` binary is on `PATH` ([`RedisCluster`] also needs `redis-cli`, see
/// [`redis_cli_available`]).
pub fn redis_server_available() -> bool {
    find_on_path("redis-server").is_some()
}

/// Whether a `redis-cli` binary is on `PATH` (needed to create a cluster; [`RedisServer::cli`]
/// falls back to speaking RESP itself without it).
pub fn redis_cli_available() -> bool {
    find_on_path("redis-cli").is_some()
}

// ---------------------------------------------------------------------------------------------
// Temporary directories, ports, logs
// ---------------------------------------------------------------------------------------------

static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new, empty directory under the system temporary directory, unique across the threads and
/// processes of concurrent test runs (pid + counter + nanoseconds).
fn unique_temp_dir(tag: &str) -> PathBuf {
    let pid = std::process::id();
    loop {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = env::temp_dir().join(format!("tower-bulwark-{tag}-{pid}-{n}-{nanos}"));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create temporary directory {}: {e}", dir.display()),
        }
    }
}

/// The ports a server of this process listens on, or may listen on again (a killed server
/// keeps its port for [`RedisServer::restart`]; a cluster node its bus port too), and those
/// handed out by [`closed_port`]. [`free_port`] never hands one out twice, so a test's server
/// never lands on a port another test of this process is using or will come back to: with
/// every integration test in one binary, that is every test's port.
static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn taken() -> MutexGuard<'static, BTreeSet<u16>> {
    TAKEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Gives `ports` back (a server dropped, or an attempt that could not bind).
fn release(ports: &[u16]) {
    let mut taken = taken();
    for port in ports {
        taken.remove(port);
    }
}

/// A port on `127.0.0.1` that was free a moment ago (bound to port 0, read, released) and that
/// no other caller in this process holds; it is [`TAKEN`] until [`release`]d.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind((LOCALHOST, 0)).expect("cannot bind 127.0.0.1:0");
        let port = listener.local_addr().expect("no local address").port();
        if taken().insert(port) {
            return port;
        }
    }
}

/// A port `P` on `127.0.0.1` where both `P` and the cluster bus port `P + 10000` are free,
/// both [`TAKEN`] until [`release`]d.
fn free_cluster_port() -> u16 {
    for _ in 0..1_000 {
        let listener = TcpListener::bind((LOCALHOST, 0)).expect("cannot bind 127.0.0.1:0");
        let port = listener.local_addr().expect("no local address").port();
        let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        if TcpListener::bind((LOCALHOST, bus)).is_err() {
            continue;
        }
        let mut taken = taken();
        if !taken.contains(&port) && !taken.contains(&bus) {
            taken.insert(port);
            taken.insert(bus);
            return port;
        }
    }
    panic!("found no free port P on 127.0.0.1 with P + {CLUSTER_BUS_OFFSET} also free");
}

/// A port on `127.0.0.1` where nothing listens, and where no server of this process will ever
/// listen (it stays [`TAKEN`]): for a client that must find nobody there. Another process on
/// the machine could still bind it, as with any free port.
pub fn closed_port() -> u16 {
    free_port()
}

/// The ports a server (a cluster node: its bus port too) holds on `port`.
fn ports_of(port: u16, cluster: bool) -> Vec<u16> {
    if cluster {
        vec![port, port + CLUSTER_BUS_OFFSET]
    } else {
        vec![port]
    }
}

/// The current length of the log, so that one attempt's lines can be told from earlier ones.
fn log_len(log: &Path) -> u64 {
    fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// The log from byte `offset` on (lossy UTF-8), or "" if unreadable.
fn log_since(log: &Path, offset: u64) -> String {
    let Ok(bytes) = fs::read(log) else {
        return String::new();
    };
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The last lines of the log, for panic messages.
fn log_tail(log: &Path) -> String {
    let text = log_since(log, 0);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(LOG_TAIL_LINES);
    let tail = lines[from..].join("\n");
    if tail.is_empty() {
        format!("(log {} is empty or unreadable)", log.display())
    } else {
        format!("--- last lines of {} ---\n{tail}", log.display())
    }
}

fn is_address_in_use(log_text: &str) -> bool {
    log_text.contains("Address already in use")
}

// ---------------------------------------------------------------------------------------------
// A tiny RESP client
// ---------------------------------------------------------------------------------------------

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as `redis-cli` prints it in raw mode: errors without the `-`, nil as "",
    /// arrays' elements joined by '\n'.
    fn render(&self) -> String {
        match self {
            Reply::Simple(s) | Reply::Error(s) => s.clone(),
            Reply::Int(n) => n.to_string(),
            Reply::Bulk(None) | Reply::Array(None) => String::new(),
            Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Reply::Array(Some(items)) => items
                .iter()
                .map(Reply::render)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// `args` as a RESP array of bulk strings.
fn encode_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn protocol_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// One CRLF-terminated line, without the CRLF.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed in the middle of a reply",
        ));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| protocol_error("reply line is not UTF-8"))
}

fn parse_len(text: &str) -> io::Result<i64> {
    text.parse()
        .map_err(|_| protocol_error(format!("bad length {text:?}")))
}

/// One RESP2 reply.
fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(reader)?;
    let Some(kind) = line.chars().next() else {
        return Err(protocol_error("empty reply line"));
    };
    let rest = &line[kind.len_utf8()..];
    match kind {
        '+' => Ok(Reply::Simple(rest.to_owned())),
        '-' => Ok(Reply::Error(rest.to_owned())),
        ':' => Ok(Reply::Int(parse_len(rest)?)),
        '$' => {
            let len = parse_len(rest)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len).map_err(|_| protocol_error("bulk too long"))?;
            let mut buf = vec![0; len + 2];
            reader.read_exact(&mut buf)?;
            if !buf.ends_with(b"\r\n") {
                return Err(protocol_error("bulk string not followed by CRLF"));
            }
            buf.truncate(len);
            Ok(Reply::Bulk(Some(buf)))
        }
        '*' => {
            let len = parse_len(rest)?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let items = (0..len)
                .map(|_| read_reply(reader))
                .collect::<io::Result<Vec<_>>>()?;
            Ok(Reply::Array(Some(items)))
        }
        other => Err(protocol_error(format!("unknown reply type {other:?}"))),
    }
}

fn connect(port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&SocketAddr::from((LOCALHOST, port)), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends one command to `127.0.0.1:port` on a new connection and reads its reply.
fn query(port: u16, args: &[&str], timeout: Duration) -> io::Result<Reply> {
    let mut stream = connect(port, timeout)?;
    stream.write_all(&encode_command(args))?;
    read_reply(&mut BufReader::new(stream))
}

/// Whether the server on `port` answers an inline `PING\r\n` with `+PONG` and reports
/// `process_id:<pid>` (so that another test's server on a recycled port is not taken for ours).
fn answers_as(port: u16, pid: u32) -> bool {
    let attempt = || -> io::Result<bool> {
        let mut stream = connect(port, Duration::from_millis(500))?;
        stream.write_all(b"PING\r\n")?;
        let mut reader = BufReader::new(stream.try_clone()?);
        if !read_line(&mut reader)?.starts_with("+PONG") {
            return Ok(false);
        }
        stream.write_all(&encode_command(&["INFO", "server"]))?;
        let info = read_reply(&mut reader)?.render();
        Ok(info
            .lines()
            .any(|line| line.trim() == format!("process_id:{pid}")))
    };
    attempt().unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// Runs `program args`, bounded by `timeout` (the child is killed past it). Returns the exit
/// status, stdout and stderr; `Err` if it could not run or timed out.
fn run_bounded(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<(ExitStatus, String, String), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(POLL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot wait for {program}: {e}"));
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Ok((status, stdout, stderr)),
        None => Err(format!(
            "`{program} {}` did not finish within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            args.join(" ")
        )),
    }
}

/// Sends `signal` (e.g. "STOP") to `pid` with the `kill` command.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(e) = status {
        panic!("cannot run `kill -{signal} {pid}`: {e}");
    }
}

/// How waiting for a freshly spawned server ended.
enum Startup {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}

fn wait_until_ready(child: &mut Child, port: u16, timeout: Duration) -> Startup {
    let pid = child.id();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Startup::Exited(status);
        }
        if answers_as(port, pid) {
            return Startup::Ready;
        }
        if Instant::now() >= deadline {
            return Startup::TimedOut;
        }
        thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// start_redis!
// ---------------------------------------------------------------------------------------------

/// A private [`RedisServer`] for this test (`start_redis!()`), or a private [`RedisCluster`]
/// (`start_redis!(cluster)`); without the binaries it needs, the harness says why (or fails, under
/// `BULWARK_REQUIRE_REDIS`) and the test returns early.
macro_rules! start_redis {
    () => {
        match $crate::common::redis_server::RedisServer::start() {
            Some(server) => server,
            None => return,
        }
    };
    (cluster) => {
        match $crate::common::redis_server::RedisCluster::start() {
            Some(cluster) => cluster,
            None => return,
        }
    };
}
pub(crate) use start_redis;

// ---------------------------------------------------------------------------------------------
// RedisServer
// ---------------------------------------------------------------------------------------------

/// A private `redis-server` on `127.0.0.1`, killed and cleaned up on drop.
pub struct RedisServer {
    /// `None` once killed.
    child: Option<Child>,
    /// The pid of the latest process (kept after a kill, for messages).
    pid: u32,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    /// Whether this is a cluster node (`--cluster-enabled yes` and its options).
    cluster: bool,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`. Prints
    /// "skipping: no redis-server binary on PATH" to stderr and returns `None` without a
    /// `redis-server`; panics (with the log's tail) if the server cannot be started.
    pub fn start() -> Option<RedisServer> {
        if !redis_server_available() {
            skip("skipping: no redis-server binary on PATH");
            return None;
        }
        Some(Self::launch(false))
    }

    /// Starts a server (a cluster node if `cluster`), trying a fresh port whenever redis
    /// cannot bind the one it was given (another process took it in between).
    fn launch(cluster: bool) -> RedisServer {
        let dir = unique_temp_dir(if cluster { "redis-node" } else { "redis" });
        let log = dir.join("redis.log");
        let mut server = RedisServer {
            child: None,
            pid: 0,
            port: 0,
            dir,
            log,
            cluster,
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            server.port = if cluster {
                free_cluster_port()
            } else {
                free_port()
            };
            let offset = log_len(&server.log);
            let mut child = server.spawn();
            match wait_until_ready(&mut child, server.port, START_TIMEOUT) {
                Startup::Ready => {
                    server.child = Some(child);
                    return server;
                }
                Startup::Exited(status) if is_address_in_use(&log_since(&server.log, offset)) => {
                    failures.push(format!("port {} in use ({status})", server.port));
                    release(&ports_of(server.port, cluster));
                    server.port = 0;
                }
                Startup::Exited(status) => server.fail(&format!("exited with {status}")),
                Startup::TimedOut => {
                    let _ = child.kill();
                    let _ = child.wait();
                    server.fail(&format!("did not answer PING within {START_TIMEOUT:?}"));
                }
            }
        }
        server.fail(&format!(
            "could not bind a port in {START_ATTEMPTS} attempts: {}",
            failures.join(", ")
        ))
    }

    /// The command-line options of this server.
    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--dir",
            &self.dir.to_string_lossy(),
            "--protected-mode",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.cluster {
            let nodes_conf = self.dir.join("nodes.conf");
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &nodes_conf.to_string_lossy(),
                    "--cluster-node-timeout",
                    "2000",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
        }
        args
    }

    /// Spawns `redis-server` on `self.port`, stdout and stderr appended to the log.
    fn spawn(&mut self) -> Child {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone {}: {e}", self.log.display()));
        let child = Command::new("redis-server")
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn redis-server: {e}"));
        self.pid = child.id();
        child
    }

    /// Panics with `what`, the pid, the port and the log's tail.
    fn fail(&self, what: &str) -> ! {
        panic!(
            "redis-server (pid {}, port {}) {what}\n{}",
            self.pid,
            self.port,
            log_tail(&self.log)
        )
    }

    /// The port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:P/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The pid of the current (or, after [`kill`](Self::kill), the last) server process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the server with `SIGKILL` and waits for it. Idempotent; works on a frozen server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts it again on the same port (and directory) and
    /// waits until it answers `PING`, retrying briefly while the port is still in use. With
    /// `--save ''` the data is gone.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + RESTART_TIMEOUT;
        loop {
            let offset = log_len(&self.log);
            let mut child = self.spawn();
            let left = deadline.saturating_duration_since(Instant::now());
            match wait_until_ready(&mut child, self.port, left.max(Duration::from_secs(1))) {
                Startup::Ready => {
                    self.child = Some(child);
                    return;
                }
                Startup::Exited(_)
                    if is_address_in_use(&log_since(&self.log, offset))
                        && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(100));
                }
                Startup::Exited(status) => {
                    self.fail(&format!("exited with {status} while restarting"))
                }
                Startup::TimedOut => {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.fail(&format!(
                        "did not answer PING within {RESTART_TIMEOUT:?} after a restart"
                    ));
                }
            }
        }
    }

    /// Stops the server with `SIGSTOP` (`kill -STOP <pid>`): connections are still accepted by
    /// the kernel but nothing is answered. No-op once killed.
    pub fn freeze(&self) {
        if self.child.is_some() {
            send_signal(self.pid, "STOP");
        }
    }

    /// Resumes a frozen server with `SIGCONT`. No-op once killed.
    pub fn thaw(&self) {
        if self.child.is_some() {
            send_signal(self.pid, "CONT");
        }
    }

    /// Runs `redis-cli -h 127.0.0.1 -p P <args>` (raw output, no `-c`: `MOVED` is returned,
    /// not followed) and returns its trimmed stdout; errors read as `ERR ...`, nil as "". If it
    /// prints nothing and fails (e.g. the server is down), returns its trimmed stderr instead.
    /// Without `redis-cli`, speaks RESP itself and renders the reply the same way (arrays'
    /// elements joined by '\n'). Bounded: panics if the command takes over 30 s.
    pub fn cli(&self, args: &[&str]) -> String {
        if !redis_cli_available() {
            return match query(self.port, args, CLI_TIMEOUT) {
                Ok(reply) => reply.render().trim().to_owned(),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    panic!(
                        "{args:?} on port {} timed out after {CLI_TIMEOUT:?}",
                        self.port
                    )
                }
                Err(e) => format!("Could not connect to Redis at 127.0.0.1:{}: {e}", self.port),
            };
        }
        let port = self.port.to_string();
        let mut full = vec!["-h", "127.0.0.1", "-p", &port];
        full.extend_from_slice(args);
        match run_bounded("redis-cli", &full, CLI_TIMEOUT) {
            Ok((status, stdout, stderr)) => {
                let stdout = stdout.trim();
                if stdout.is_empty() && !status.success() {
                    stderr.trim().to_owned()
                } else {
                    stdout.to_owned()
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
        if self.port != 0 {
            release(&ports_of(self.port, self.cluster));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RedisCluster
// ---------------------------------------------------------------------------------------------

/// A private Redis Cluster of 3 masters and no replicas, each node a [`RedisServer`] (so
/// nodes can be killed, frozen and restarted one by one).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// 3 masters, no replicas: each node runs with `--cluster-enabled yes --cluster-config-file
    /// <dir>/nodes.conf --cluster-node-timeout 2000` on a port `P` with `P + 10000` (the cluster
    /// bus) free; the slots are assigned with `redis-cli --cluster create ... --cluster-replicas
    /// 0 --cluster-yes`; returns once `CLUSTER INFO` says `cluster_state:ok` on every node
    /// (bounded to 20 s, then panics). Returns `None` (printing why) without `redis-server` or
    /// `redis-cli`.
    pub fn start() -> Option<RedisCluster> {
        if !redis_server_available() {
            skip("skipping: no redis-server binary on PATH");
            return None;
        }
        if !redis_cli_available() {
            skip("skipping: no redis-cli binary on PATH (needed to create a cluster)");
            return None;
        }
        // One node at a time: a running node holds both its ports, so the next pick avoids them.
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::launch(true)).collect();
        let cluster = RedisCluster { nodes };
        cluster.create();
        cluster.wait_until_ok();
        Some(cluster)
    }

    fn create(&self) {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        match run_bounded("redis-cli", &args, CLUSTER_CREATE_TIMEOUT) {
            Ok((status, _, _)) if status.success() => {}
            Ok((status, stdout, stderr)) => panic!(
                "`redis-cli {}` failed with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
                args.join(" "),
                self.logs()
            ),
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let infos: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    query(n.port(), &["CLUSTER", "INFO"], Duration::from_secs(2))
                        .map(|r| r.render())
                        .unwrap_or_else(|e| format!("(no answer: {e})"))
                })
                .collect();
            if infos
                .iter()
                .all(|info| info.lines().any(|l| l.trim() == "cluster_state:ok"))
            {
                return;
            }
            if Instant::now() >= deadline {
                let report: Vec<String> = self
                    .nodes
                    .iter()
                    .zip(&infos)
                    .map(|(n, info)| format!("--- CLUSTER INFO on port {} ---\n{info}", n.port()))
                    .collect();
                panic!(
                    "the cluster did not reach cluster_state:ok within {CLUSTER_TIMEOUT:?}\n{}\n{}",
                    report.join("\n"),
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every node's log tail, for panic messages.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| log_tail(&n.log))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every node's `redis://127.0.0.1:P/`, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Which node (index into `nodes`) serves the slot of `key`, from `CLUSTER KEYSLOT` and
    /// `CLUSTER NODES` as the first live node sees them. Panics if no node owns the slot.
    pub fn node_for_key(&self, key: &str) -> usize {
        let timeout = Duration::from_secs(5);
        let mut last_error = String::from("no node answered");
        for node in &self.nodes {
            let slot = match query(node.port(), &["CLUSTER", "KEYSLOT", key], timeout) {
                Ok(Reply::Int(slot)) => slot,
                Ok(other) => panic!("CLUSTER KEYSLOT {key:?} answered {other:?}"),
                Err(e) => {
                    last_error = format!("port {}: {e}", node.port());
                    continue;
                }
            };
            let nodes_text = match query(node.port(), &["CLUSTER", "NODES"], timeout) {
                Ok(reply @ Reply::Bulk(Some(_))) => reply.render(),
                Ok(other) => panic!("CLUSTER NODES answered {other:?}"),
                Err(e) => {
                    last_error = format!("port {}: {e}", node.port());
                    continue;
                }
            };
            let port = owner_port(&nodes_text, slot).unwrap_or_else(|| {
                panic!("no master owns slot {slot} of {key:?} in CLUSTER NODES:\n{nodes_text}")
            });
            return self
                .nodes
                .iter()
                .position(|n| n.port() == port)
                .unwrap_or_else(|| {
                    panic!("slot {slot} of {key:?} is served by port {port}, not one of ours")
                });
        }
        panic!("cannot ask the cluster where {key:?} lives: {last_error}")
    }
}

/// The port of the master that owns `slot` according to `CLUSTER NODES` output, whose lines
/// read `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`
/// with slots as `N` or `A-B` (and `[...]` for migrations, ignored).
fn owner_port(cluster_nodes: &str, slot: i64) -> Option<u16> {
    cluster_nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].split(',').any(|flag| flag == "master") {
            return None;
        }
        let owns = fields[8..].iter().any(|range| {
            if range.starts_with('[') {
                return false;
            }
            let (start, end) = range.split_once('-').unwrap_or((range, range));
            match (start.parse::<i64>(), end.parse::<i64>()) {
                (Ok(start), Ok(end)) => (start..=end).contains(&slot),
                _ => false,
            }
        });
        if !owns {
            return None;
        }
        let addr = fields[1].split('@').next()?;
        addr.rsplit_once(':')?.1.parse().ok()
    })
}
