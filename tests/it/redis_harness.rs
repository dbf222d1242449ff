//! The Redis test harness itself (`common::redis_server`): a private `redis-server` that
//! answers, freezes, thaws, dies and comes back on the same port, and a private 3-master
//! cluster whose slot map `node_for_key` reads correctly. Every test returns early, after the
//! harness has printed why, when no `redis-server` (or, for the cluster, `redis-cli`) is on PATH.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::redis_server::start_redis;

/// Sends an inline `PING` on a new connection and reads one reply line, giving up after
/// `read_timeout`.
fn raw_ping(port: u16, read_timeout: Duration) -> io::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(read_timeout))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"PING\r\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[test]
fn starts_and_answers_commands() {
    let server = start_redis!();
    assert_ne!(
        server.port(),
        6379,
        "must never use the system server's port"
    );
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert_eq!(server.cli(&["SET", "greeting", "hello world"]), "OK");
    assert_eq!(server.cli(&["GET", "greeting"]), "hello world");
    assert_eq!(server.cli(&["GET", "missing"]), "");
    assert_eq!(server.cli(&["INCRBY", "n", "41"]), "41");
    assert_eq!(server.cli(&["INCR", "n"]), "42");
    assert_eq!(server.cli(&["RPUSH", "list", "a", "b", "c"]), "3");
    assert_eq!(server.cli(&["LRANGE", "list", "0", "-1"]), "a\nb\nc");
    assert!(server
        .cli(&["INCR", "greeting"])
        .starts_with("ERR value is not an integer"));
    // The process answering is ours, with persistence off.
    let info = server.cli(&["INFO", "server"]);
    assert!(
        info.lines()
            .any(|l| l.trim() == format!("process_id:{}", server.pid())),
        "{info}"
    );
    assert_eq!(server.cli(&["CONFIG", "GET", "save"]), "save");
    assert_eq!(
        server.cli(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nno"
    );
}

#[test]
fn servers_started_in_parallel_are_isolated() {
    let a = start_redis!();
    let b = start_redis!();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.pid(), b.pid());
    assert_eq!(a.cli(&["SET", "k", "a"]), "OK");
    assert_eq!(b.cli(&["GET", "k"]), "");
}

#[test]
fn freeze_stops_answers_and_thaw_resumes_them() {
    let server = start_redis!();
    assert_eq!(
        raw_ping(server.port(), Duration::from_secs(5)).unwrap(),
        "+PONG"
    );

    server.freeze();
    match raw_ping(server.port(), Duration::from_millis(200)) {
        Err(e) if is_timeout(&e) => {}
        other => panic!("a frozen server answered PING: {other:?}"),
    }

    server.thaw();
    assert_eq!(
        raw_ping(server.port(), Duration::from_secs(5)).unwrap(),
        "+PONG"
    );
    assert_eq!(server.cli(&["PING"]), "PONG");
}

#[test]
fn kill_refuses_connections_and_restart_comes_back_empty_on_the_same_port() {
    let mut server = start_redis!();
    let port = server.port();
    let first_pid = server.pid();
    assert_eq!(server.cli(&["SET", "k", "v"]), "OK");

    server.kill();
    server.kill(); // idempotent
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "a killed server still accepts connections"
    );
    // Freezing or thawing a dead server is a no-op.
    server.freeze();
    server.thaw();

    server.restart();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), first_pid);
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert_eq!(
        server.cli(&["GET", "k"]),
        "",
        "data survived with --save ''"
    );
    assert_eq!(server.cli(&["DBSIZE"]), "0");

    // A restart of a running (even frozen) server works too.
    server.freeze();
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(raw_ping(port, Duration::from_secs(5)).unwrap(), "+PONG");
}

#[test]
fn drop_kills_the_server() {
    let server = start_redis!();
    let port = server.port();
    server.freeze();
    drop(server);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "a dropped server still accepts connections"
    );
}

#[test]
fn cluster_forms_and_node_for_key_matches_the_slot_owner() {
    let cluster = start_redis!(cluster);
    assert_eq!(cluster.nodes.len(), 3);
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    for (node, url) in cluster.nodes.iter().zip(&urls) {
        assert_eq!(url, &node.url());
        let info = node.cli(&["CLUSTER", "INFO"]);
        assert!(
            info.lines().any(|l| l.trim() == "cluster_state:ok"),
            "node on port {}: {info}",
            node.port()
        );
        assert!(
            info.lines().any(|l| l.trim() == "cluster_known_nodes:3"),
            "{info}"
        );
    }

    let mut owners = [false; 3];
    for i in 0..60 {
        let key = format!("key-{i}");
        let owner = cluster.node_for_key(&key);
        owners[owner] = true;
        for (index, node) in cluster.nodes.iter().enumerate() {
            // Without -c, redis-cli reports MOVED instead of following it.
            let answer = node.cli(&["SET", &key, "v"]);
            if index == owner {
                assert_eq!(answer, "OK", "{key} on its owner, node {index}");
                assert_eq!(node.cli(&["GET", &key]), "v");
            } else {
                assert!(
                    answer.starts_with("MOVED "),
                    "{key} on node {index} (owner {owner}): {answer}"
                );
                let target = format!(":{}", cluster.nodes[owner].port());
                assert!(
                    answer.ends_with(&target),
                    "{answer} should point to {target}"
                );
            }
        }
    }
    assert_eq!(
        owners, [true; 3],
        "60 keys should spread over all 3 masters"
    );
}
