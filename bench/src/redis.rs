//! The redis row: `redis-server` (Debian's package) on 127.0.0.1 with N keys (DEBUG
//! POPULATE) and one client connected through the dump and the restore
//! (`--tcp-established`): after the restore the same connection must count every key and
//! a new client must be served.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::workload::Proc;

/// Whether redis-server is installed (the row is skipped otherwise).
pub fn available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A RESP connection.
pub struct Client(BufReader<TcpStream>);

impl Client {
    pub fn connect(port: u16, timeout: Duration) -> Result<Client> {
        let start = Instant::now();
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    s.set_read_timeout(Some(timeout))?;
                    return Ok(Client(BufReader::new(s)));
                }
                Err(e) if start.elapsed() > timeout => {
                    return Err(e).with_context(|| format!("connect to redis on port {port}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// One command; its reply line (a bulk string's contents after `$`).
    pub fn cmd(&mut self, args: &[&str]) -> Result<String> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req += &format!("${}\r\n{a}\r\n", a.len());
        }
        self.0.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.0
            .read_line(&mut line)
            .with_context(|| format!("redis {args:?}"))?;
        let line = line.trim_end().to_string();
        if let Some(n) = line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            let mut buf = vec![0u8; n + 2];
            self.0.read_exact(&mut buf)?;
            buf.truncate(n);
            return Ok(format!("${}", String::from_utf8_lossy(&buf)));
        }
        Ok(line)
    }
}

/// Starts redis-server on a free port with `keys` keys, its output appended to `out`;
/// returns it, its port and a connected client.
pub fn start(keys: u64, out: &Path, timeout: Duration) -> Result<(Proc, u16, Client)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let p = port.to_string();
    let dir = out.parent().context("log dir")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--enable-debug-command", "yes", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start redis-server")?;
    let proc = Proc::child(child);
    let mut c = Client::connect(port, timeout)?;
    let n = keys.to_string();
    let r = c.cmd(&["DEBUG", "POPULATE", &n, "key", "64"])?;
    if r != "+OK" {
        bail!("DEBUG POPULATE: {r}");
    }
    Ok((proc, port, c))
}

/// After the restore: the same client counts every key, a new one is served.
pub fn verify(client: &mut Client, port: u16, keys: u64, timeout: Duration) -> Result<String> {
    let n = client.cmd(&["DBSIZE"])?;
    if n != format!(":{keys}") {
        bail!("DBSIZE through the old connection: {n}, want {keys}");
    }
    let mut fresh = Client::connect(port, timeout)?;
    let pong = fresh.cmd(&["PING"])?;
    if pong != "+PONG" {
        bail!("a new client got {pong}");
    }
    Ok("PASS".into())
}
