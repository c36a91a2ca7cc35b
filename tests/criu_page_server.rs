//! CRIU's page server with ckpt at both ends, on loopback: `criu page-server` receives a
//! dump's pages into its own directory while the rest of the image is written locally;
//! the two directories merged restore the workload (checked by itself), from ckpt's own
//! `criu dump --page-server` and from `runc checkpoint --page-server`. A dump whose page
//! server is not there fails and leaves the workload running; lazy pages are refused.

mod common;

use common::dropin::*;
use common::*;
use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

/// A port of 127.0.0.1 that nothing listens on now (the kernel's pick, let go).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A page server in the background (`-d`), listening on 127.0.0.1 once this returns.
struct PageServer {
    pid: i32,
    port: u16,
}

impl PageServer {
    fn start(env: &Env, criu: &Path, dir: &Path) -> PageServer {
        let port = free_port();
        let pidfile = env.path().join(format!("page-server-{port}.pid"));
        criu_ok(
            env,
            criu,
            &[
                "page-server",
                "-D",
                dir.to_str().unwrap(),
                "--address",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "-d",
                "--pidfile",
                pidfile.to_str().unwrap(),
                "-o",
                "page-server.log",
            ],
            dir,
            "page-server.log",
        );
        let pid = pid_in(&pidfile);
        env.track(pid);
        PageServer { pid, port }
    }

    /// Waits until it has exited (it serves one dump), reaping it if it came to us.
    fn wait_exited(&self, env: &Env) {
        wait_until("the page server to exit after its dump", || {
            reap(self.pid, Duration::from_millis(1));
            !exists(self.pid)
        });
        env.untrack(self.pid);
    }
}

#[test]
fn a_dump_sends_its_pages_to_a_page_server_and_restores_from_the_merged_directories() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let mut w = env.start("mem");
    let pid = w.pid.to_string();

    // Lazy pages are refused by name, whichever end is asked.
    for args in [
        &[
            "page-server",
            "-D",
            "/nonexistent",
            "--port",
            "1",
            "--lazy-pages",
        ][..],
        &["dump", "-t", &pid, "-D", "/nonexistent", "--lazy-pages"][..],
    ] {
        let out = env.run_program(&criu, args);
        assert!(
            !out.success() && out.stderr.contains("--lazy-pages"),
            "{out}"
        );
    }

    // No page server there: the dump fails naming it, the workload runs on untouched.
    let none = env.subdir("none");
    let port = free_port().to_string();
    let out = env.run_program(
        &criu,
        &[
            "dump",
            "-t",
            &pid,
            "-D",
            none.to_str().unwrap(),
            "--page-server",
            "--address",
            "127.0.0.1",
            "--port",
            &port,
        ],
    );
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("page server") && out.stderr.contains(&port),
        "{out}"
    );
    assert!(!none.join("ckpt/inventory.img").exists());
    assert_running_untraced(w.pid);
    env.check(&mut w);

    for cycle in 0..2 {
        let far = env.subdir(&format!("far{cycle}"));
        let ps = PageServer::start(&env, &criu, &far);
        let local = env.subdir(&format!("local{cycle}"));
        criu_ok(
            &env,
            &criu,
            &[
                "dump",
                "-t",
                &pid,
                "-D",
                local.to_str().unwrap(),
                "-o",
                "dump.log",
                "--page-server",
                "--address",
                "127.0.0.1",
                "--port",
                &ps.port.to_string(),
            ],
            &local,
            "dump.log",
        );
        ps.wait_exited(&env);
        // The pages are there, not here; the rest is here.
        let pages = far.join("ckpt/pages-1.img");
        assert!(
            fs::metadata(&pages).unwrap().len() > 1 << 20,
            "mem's memory"
        );
        assert!(!local.join("ckpt/pages-1.img").exists());
        assert!(local.join("ckpt/inventory.img").is_file());
        assert_eq!(
            fs::read_dir(far.join("ckpt")).unwrap().count(),
            1,
            "only the pages file"
        );
        fs::copy(&pages, local.join("ckpt/pages-1.img")).unwrap();
        env.reap_dumped(w.pid);
        criu_ok(
            &env,
            &criu,
            &[
                "restore",
                "-d",
                "-D",
                local.to_str().unwrap(),
                "-o",
                "restore.log",
            ],
            &local,
            "restore.log",
        );
        env.track(w.pid);
        assert_running_untraced(w.pid);
        env.check(&mut w);
    }
}

#[test]
fn runc_checkpoint_to_a_page_server_then_restore_from_the_merged_directories() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let ctr = Runc::create(&env, COUNTING);
    ctr.count_above(2);
    let far = env.subdir("far");
    let ps = PageServer::start(&env, &criu, &far);
    let images = env.path().join("runc-img");
    let out = runc_checkpoint(
        &ctr,
        &criu,
        &images,
        &["--page-server", &format!("127.0.0.1:{}", ps.port)],
    );
    assert!(
        out.status.success(),
        "{}\ndump.log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(images.join("dump.log")).unwrap_or_default()
    );
    ps.wait_exited(&env);
    let at = ctr.count();
    assert!(!ctr.state().contains("\"running\""), "{}", ctr.state());
    assert!(!images.join("ckpt/pages-1.img").exists());
    fs::copy(
        far.join("ckpt/pages-1.img"),
        images.join("ckpt/pages-1.img"),
    )
    .unwrap();
    ctr.restore_through(&criu, &images);
    // It goes on from where it was.
    let next = ctr.count_above(at);
    assert!(next < at + 100, "{at} -> {next}");
    ctr.count_above(next + 2);
}
