//! Real servers from Debian's packages, checkpointed with their clients connected:
//! redis-server (100k keys, a client connected across every cycle, new clients after),
//! memcached (4 worker threads, a client connected across every cycle), PostgreSQL, nginx (a master
//! and two workers, reloaded after the restore) and `python3 -m http.server`.

mod common;

use common::*;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const CYCLES: usize = 3;

/// A port nobody uses now (bound once by us, then let go), below the kernel's ephemeral
/// range (32768-60999 by default): between a dump and its restore the server's port is
/// free, and an ephemeral one could meanwhile become some client's local port, which the
/// restored listener then cannot bind (EADDRINUSE, rightly).
/// Each call of this test process starts from the next port (two tests of it never get
/// the same one).
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seed = std::process::id() as usize * 31;
    (0..12000)
        .map(|_| {
            let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            20000 + ((seed + i * 7919) % 12000) as u16
        })
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port in 20000-31999")
}

/// Connects to 127.0.0.1:`port`, retrying while the server starts.
fn connect(port: u16) -> TcpStream {
    let start = Instant::now();
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                return s;
            }
            Err(e) if start.elapsed() > Duration::from_secs(20) => {
                panic!("connect 127.0.0.1:{port}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A minimal RESP client: one command, its reply as text (`+OK`, `:5`, `$value`, `-ERR`).
struct Redis(BufReader<TcpStream>);

impl Redis {
    fn new(port: u16) -> Redis {
        Redis(BufReader::new(connect(port)))
    }

    fn cmd(&mut self, args: &[&str]) -> String {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req += &format!("${}\r\n{a}\r\n", a.len());
        }
        self.0.get_mut().write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.0
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"));
        let line = line.trim_end().to_string();
        if let Some(n) = line.strip_prefix('$') {
            let n: i64 = n.parse().unwrap();
            if n < 0 {
                return "$nil".into();
            }
            let mut buf = vec![0u8; n as usize + 2];
            self.0.read_exact(&mut buf).unwrap();
            buf.truncate(n as usize);
            return format!("${}", String::from_utf8_lossy(&buf));
        }
        line
    }
}

#[test]
fn redis_keeps_its_keys_and_its_client() {
    // Not canonicalized: Debian's redis-server is a link to redis-check-rdb, which acts
    // by the name it is started as.
    which("redis-server");
    let server = std::path::PathBuf::from("redis-server");
    let env = Env::new();
    let port = free_port();
    let p = port.to_string();
    let dir = env.path().to_str().unwrap().to_string();
    let args = [
        "--port",
        &p,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir,
        "--enable-debug-command",
        "yes",
    ];
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let mut w = env.spawn("redis", &server, &args);
    let mut client = Redis::new(port);
    assert_eq!(client.cmd(&["PING"]), "+PONG");
    assert_eq!(
        client.cmd(&["DEBUG", "POPULATE", "100000", "key", "16"]),
        "+OK"
    );
    assert_eq!(client.cmd(&["SET", "before", "the dump"]), "+OK");
    for i in 1..=CYCLES {
        let img = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &img, &["--tcp-established"]).ok();
        env.restore_dumped(&w, &img);
        // The same connection goes on.
        // 100k keys, "before", and "cycles" from the second cycle on.
        let keys = if i == 1 { 100_001 } else { 100_002 };
        let n = client.cmd(&["DBSIZE"]);
        assert_eq!(
            n,
            format!(":{keys}"),
            "cycle {i}; redis said:\n{}",
            env.output(&w)
        );
        assert_eq!(client.cmd(&["GET", "before"]), "$the dump", "cycle {i}");
        assert_eq!(client.cmd(&["GET", "key:99999"]).len(), 17, "cycle {i}");
        assert_eq!(client.cmd(&["INCR", "cycles"]), format!(":{i}"));
        // And a new one is served.
        let mut fresh = Redis::new(port);
        assert_eq!(fresh.cmd(&["PING"]), "+PONG", "cycle {i}");
        assert_eq!(fresh.cmd(&["GET", "cycles"]), format!("${i}"));
        // Gone before the next dump: a connection redis has not closed yet on its side
        // (CLOSE_WAIT) is refused by the dump, rightly.
        drop(fresh);
        wait_until("redis to close the second client", || {
            client
                .cmd(&["INFO", "clients"])
                .contains("connected_clients:1\r\n")
        });
    }
    w.passes = 0;
    env.kill_and_reap(w.pid);
}

/// Waits until the server `pid` holds its listening socket only. Between its
/// shutdown(SHUT_WR) of a served connection and its close, the connection's socket is in
/// TCP_CLOSE with its port released, which a dump refuses (README "Not supported yet").
fn only_the_listener(pid: i32) {
    wait_until("the server to close its served connection", || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|t| t.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
            == 1
    });
}

/// One GET of `/name` from 127.0.0.1:`port`: the status line and the body.
fn http_get(port: u16, name: &str) -> (String, String) {
    let mut s = connect(port);
    write!(s, "GET /{name} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let status = all.lines().next().unwrap_or("").to_string();
    let body = all.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

/// `python3 -m http.server` (a thread per request) serves, is dumped and serves after the
/// restore: its request threads left the process a private futex hash, which comes back.
#[test]
fn python_http_server_serves_after_restore() {
    let env = Env::new();
    std::fs::write(env.path().join("hello.txt"), "hello from before the dump\n").unwrap();
    let port = free_port();
    let p = port.to_string();
    let w = env.spawn(
        "http",
        &python3(),
        &[
            OsStr::new("-u"),
            OsStr::new("-m"),
            OsStr::new("http.server"),
            OsStr::new("--bind"),
            OsStr::new("127.0.0.1"),
            OsStr::new(&p),
        ],
    );
    env.wait_line(&w, "Serving HTTP", |l| l.starts_with("Serving HTTP"));
    let (status, _) = http_get(port, "hello.txt");
    assert!(status.contains("200"), "{status}");
    only_the_listener(w.pid);
    let img = env.subdir("img");
    env.dump(w.pid, &img, &[]).ok();
    env.restore_dumped(&w, &img);
    let (status, body) = http_get(port, "hello.txt");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "hello from before the dump\n");
    env.kill_and_reap(w.pid);
}

/// Python's HTTP server without a thread per request, serving between three cycles.
#[test]
fn python_http_server_three_cycles() {
    let env = Env::new();
    std::fs::write(env.path().join("hello.txt"), "hello from before the dump\n").unwrap();
    let port = free_port();
    let script = format!(
        "import http.server as h\n\
         print('Serving HTTP', flush=True)\n\
         h.HTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler).serve_forever()\n"
    );
    let w = env.spawn("http", &python3(), &[OsStr::new("-c"), OsStr::new(&script)]);
    env.wait_line(&w, "Serving HTTP", |l| l.starts_with("Serving HTTP"));
    let (status, body) = http_get(port, "hello.txt");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "hello from before the dump\n");
    for i in 1..=CYCLES {
        let img = env.subdir(&format!("img{i}"));
        only_the_listener(w.pid);
        env.dump(w.pid, &img, &[]).ok();
        env.restore_dumped(&w, &img);
        let (status, body) = http_get(port, "hello.txt");
        assert!(status.contains("200"), "cycle {i}: {status}");
        assert_eq!(body, "hello from before the dump\n", "cycle {i}");
    }
    env.kill_and_reap(w.pid);
}

/// One memcached text-protocol command and its reply up to `end` (e.g. "END\r\n").
fn memcached(s: &mut BufReader<TcpStream>, cmd: &str, end: &str) -> String {
    s.get_mut().write_all(cmd.as_bytes()).unwrap();
    let mut all = String::new();
    while !all.ends_with(end) {
        let mut line = String::new();
        let n = s
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("memcached {cmd:?}: {e}"));
        assert!(n > 0, "memcached closed the connection after {all:?}");
        all += &line;
    }
    all
}

/// memcached with 4 worker threads (epoll, eventfds and pipes each) and 1000 keys: after
/// each of three cycles the same client connection gets every key and a new client is
/// served.
#[test]
fn memcached_keeps_its_keys_and_its_client() {
    let bin = which("memcached");
    let env = Env::new();
    let port = free_port();
    let p = port.to_string();
    let args = [
        "-u",
        "root",
        "-l",
        "127.0.0.1",
        "-p",
        &p,
        "-U",
        "0",
        "-t",
        "4",
    ];
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let mut w = env.spawn("memcached", &bin, &args);
    let mut client = BufReader::new(connect(port));
    for k in 0..1000 {
        let v = format!("value-{k}");
        let got = memcached(
            &mut client,
            &format!("set key{k} 0 0 {}\r\n{v}\r\n", v.len()),
            "\r\n",
        );
        assert_eq!(got, "STORED\r\n");
    }
    for i in 1..=CYCLES {
        let img = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &img, &["--tcp-established"]).ok();
        env.restore_dumped(&w, &img);
        for k in (0..1000).step_by(7) {
            let got = memcached(&mut client, &format!("get key{k}\r\n"), "END\r\n");
            let v = format!("value-{k}");
            assert_eq!(
                got,
                format!("VALUE key{k} 0 {}\r\n{v}\r\nEND\r\n", v.len()),
                "cycle {i}"
            );
        }
        let mut fresh = BufReader::new(connect(port));
        let got = memcached(&mut fresh, "get key999\r\n", "END\r\n");
        assert!(got.contains("value-999"), "cycle {i}: {got}");
        drop(fresh);
        wait_until("memcached to close the second client", || {
            memcached(&mut client, "stats\r\n", "END\r\n").contains("STAT curr_connections 1\r\n")
        });
    }
    w.passes = 0;
    env.kill_and_reap(w.pid);
}

/// nginx, a master and two workers sharing its listening socket: serves after each of
/// three cycles, and a reload (SIGHUP: the restored master starts new workers) too.
#[test]
fn nginx_master_and_workers_serve_and_reload() {
    let bin = which("nginx");
    let env = Env::new();
    let root = env.path();
    std::fs::write(root.join("index.html"), "hello from nginx\n").unwrap();
    std::fs::create_dir_all(root.join("logs")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let port = free_port();
    let r = root.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 2;\npid {r}/nginx.pid;\n\
         error_log {r}/logs/error.log;\nevents {{ worker_connections 64; }}\n\
         http {{\n access_log {r}/logs/access.log;\n client_body_temp_path {r}/tmp;\n\
         proxy_temp_path {r}/tmp;\n fastcgi_temp_path {r}/tmp;\n uwsgi_temp_path {r}/tmp;\n\
         scgi_temp_path {r}/tmp;\n server {{ listen 127.0.0.1:{port}; root {r}; }}\n}}\n"
    );
    std::fs::write(root.join("nginx.conf"), conf).unwrap();
    let conf_path = root.join("nginx.conf");
    let w = env.spawn(
        "nginx",
        &bin,
        &[
            OsStr::new("-c"),
            conf_path.as_os_str(),
            OsStr::new("-p"),
            root.as_os_str(),
        ],
    );
    let get = |what: &str| {
        let (status, body) = http_get(port, "index.html");
        assert!(status.contains("200"), "{what}: {status}");
        assert_eq!(body, "hello from nginx\n", "{what}");
    };
    get("before");
    let mut pids = Vec::new();
    for i in 1..=CYCLES {
        let img = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &img, &[]).ok();
        pids = common::tree::tree_pids(&img);
        assert_eq!(pids.len(), 3, "a master and two workers: {pids:?}");
        env.reap_dumped(w.pid);
        common::tree::wait_gone(&pids);
        env.restore_detached(&img).ok();
        for &p in &pids {
            env.track(p);
            assert_running_untraced(p);
        }
        get(&format!("cycle {i}"));
    }
    assert!(signal(w.pid, libc::SIGHUP));
    wait_until("nginx to replace its workers", || {
        let now: Vec<i32> =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", w.pid, w.pid))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
        now.len() == 2 && now.iter().all(|p| !pids.contains(p))
    });
    get("after the reload");
    // A graceful stop: the master stops its workers, which come to us to be reaped.
    assert!(signal(w.pid, libc::SIGQUIT));
    let st = reap(w.pid, Duration::from_secs(20));
    assert!(st.is_some(), "nginx master did not stop");
    env.untrack(w.pid);
}

/// PostgreSQL's server binary (the `postgresql` package), whichever major version.
fn postgres_bin() -> std::path::PathBuf {
    let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql: the postgresql package is needed")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("a postgres binary in /usr/lib/postgresql/*/bin")
}

/// Runs `cmd` as the postgres user; its output on failure.
fn as_postgres(cmd: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "postgres",
            "--regid",
            "postgres",
            "--init-groups",
        ])
        .arg(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{} {args:?}: {text}", cmd.display());
    text
}

/// Removes the System V segment a killed postmaster leaves (a graceful stop removes it
/// itself): its id is the last word of postmaster.pid's seventh line.
struct PgSegment(std::path::PathBuf);

impl Drop for PgSegment {
    fn drop(&mut self) {
        let text = std::fs::read_to_string(self.0.join("postmaster.pid")).unwrap_or_default();
        if let Some(id) = text
            .lines()
            .nth(6)
            .and_then(|l| l.split_whitespace().last())
            .and_then(|id| id.parse::<i32>().ok())
        {
            let _ = std::process::Command::new("ipcrm")
                .args(["-m", &id.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// PostgreSQL: a postmaster and its five helpers (checkpointer, background writer, WAL
/// writer, autovacuum and logical replication launchers), sharing anonymous shared
/// memory and the System V segment of the host's ipc namespace it checks for other
/// postmasters (attached again by id: it stays while the server is dumped and killed).
/// After each of three cycles a new client connection (a new backend, forked by the
/// restored postmaster) reads every row written before and writes one more.
#[test]
fn postgres_keeps_its_rows_and_serves_new_backends() {
    let bin = postgres_bin();
    let env = Env::new();
    let root = env.path();
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let data = root.join("pgdata");
    let sock = root.join("sock");
    std::fs::create_dir(&sock).unwrap();
    std::fs::create_dir(&data).unwrap();
    let chown = std::process::Command::new("chown")
        .args(["postgres:postgres"])
        .arg(&sock)
        .arg(&data)
        .status()
        .unwrap();
    assert!(chown.success());
    as_postgres(
        &bin.join("initdb"),
        &[
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "--no-sync",
            "-U",
            "postgres",
        ],
    );
    let _segment = PgSegment(data.clone());
    let port = free_port();
    let p = port.to_string();
    let args = [
        "--reuid",
        "postgres",
        "--regid",
        "postgres",
        "--init-groups",
        bin.join("postgres").to_str().unwrap(),
        "-D",
        data.to_str().unwrap(),
        "-p",
        &p,
        "-k",
        sock.to_str().unwrap(),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",
    ]
    .map(String::from);
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let w = env.spawn("postgres", &which("setpriv"), &args);
    // Its stdout and stderr: a file the restore opens again as the server's user.
    let chown = std::process::Command::new("chown")
        .args(["postgres:postgres"])
        .arg(&w.out)
        .status()
        .unwrap();
    assert!(chown.success());
    let psql = bin.join("psql");
    let run = |q: &str| {
        std::process::Command::new(&psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &p,
                "-U",
                "postgres",
                "-Atq",
                "-c",
                q,
            ])
            .output()
            .unwrap()
    };
    let sql = |q: &str| -> String {
        let out = run(q);
        assert!(
            out.status.success(),
            "psql {q:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let start = Instant::now();
    loop {
        let o = run("select 1");
        if o.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "postgres did not start: psql: {}; server: {}",
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(&w.out).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sql("create table t (x int); insert into t select generate_series(1, 1000)");
    for i in 1..=CYCLES {
        let img = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &img, &[]).ok();
        let pids = common::tree::tree_pids(&img);
        assert_eq!(pids.len(), 6, "a postmaster and five helpers: {pids:?}");
        env.reap_dumped(w.pid);
        common::tree::wait_gone(&pids);
        env.restore_detached(&img).ok();
        for &pid in &pids {
            env.track(pid);
            assert_running_untraced(pid);
        }
        let want = 1000 + (i as u64 - 1);
        assert_eq!(sql("select count(*) from t"), want.to_string(), "cycle {i}");
        sql(&format!("insert into t values ({})", 5000 + i));
    }
    assert_eq!(sql("select sum(x) from t where x > 5000"), "15006");
    // A fast shutdown: the postmaster stops its helpers and removes its segment.
    assert!(signal(w.pid, libc::SIGINT));
    let st = reap(w.pid, Duration::from_secs(30));
    assert!(st.is_some(), "postgres did not stop");
    env.untrack(w.pid);
}
