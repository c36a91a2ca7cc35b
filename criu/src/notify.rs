//! CRIU's notifications, fed from the hooks of ckpt's dump and restore: over the RPC
//! socket (a NOTIFY response, answered by a NOTIFY request with notify_success) when the
//! client set notify_scripts, or by running each --action-script of the command line with
//! CRTOOLS_SCRIPT_ACTION (and CRTOOLS_INIT_PID) set, as CRIU does.

use crate::rpc::{CriuNotify, CriuReq, CriuReqType, CriuResp};
use ckpt_restore::hooks::Stage;
use ckpt_sys::seqpacket::Endpoint;
use prost::Message;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Who hears of each stage.
#[derive(Clone)]
pub enum Listener {
    Rpc(Arc<Endpoint>),
    Scripts(Vec<String>),
}

impl Listener {
    /// Tells the listener of `script` (with the root's pid for the stages that have one);
    /// Err: the listener failed it.
    pub fn notify(&self, script: &str, pid: i32) -> Result<(), String> {
        tracing::info!(script, pid, "notify");
        match self {
            Listener::Rpc(ep) => rpc(ep, script, pid, &[]),
            Listener::Scripts(paths) => {
                for p in paths {
                    let mut cmd = std::process::Command::new(p);
                    cmd.env("CRTOOLS_SCRIPT_ACTION", script);
                    if pid > 0 {
                        cmd.env("CRTOOLS_INIT_PID", pid.to_string());
                    }
                    let status = cmd
                        .status()
                        .map_err(|e| format!("action script {p}: {e}"))?;
                    if !status.success() {
                        return Err(format!("action script {p} {script}: {status}"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// When the restore's processes all existed (setup-namespaces) and when they ran
/// (post-resume): CRIU's forking and restore times in `stats-restore`.
static FORKED: OnceLock<Instant> = OnceLock::new();
static RUNNING: OnceLock<Instant> = OnceLock::new();

pub fn forked_at() -> Option<Instant> {
    FORKED.get().copied()
}

pub fn running_at() -> Option<Instant> {
    RUNNING.get().copied()
}

/// Installs the restore's hook, which notes the times `stats-restore` reports, and, with
/// a listener, the dump's; each tells the listener of every stage. Once per process.
pub fn install(listener: Option<Listener>) {
    if let Some(d) = listener.clone() {
        ckpt_dump::hooks::install(Box::new(move |s| d.notify(s.script(), 0)));
    }
    ckpt_restore::hooks::install(Box::new(move |s| {
        match s {
            Stage::SetupNamespaces(_) => {
                let _ = FORKED.set(Instant::now());
            }
            Stage::PostResume => {
                let _ = RUNNING.set(Instant::now());
            }
            _ => {}
        }
        listener
            .as_ref()
            .map_or(Ok(()), |l| l.notify(s.script(), s.pid()))
    }));
}

/// orphan_pts_master: each container console's new master goes to the client as CRIU
/// sends it, a NOTIFY "orphan-pts-master" carrying the fd (runc passes it on to its
/// --console-socket), whether or not the client asked for the other notifications.
pub fn install_console_master(ep: Arc<Endpoint>) {
    ckpt_restore::hooks::install_master(Box::new(move |fd| {
        use std::os::fd::AsRawFd;
        tracing::info!(fd = fd.as_raw_fd(), "notify orphan-pts-master");
        rpc(&ep, "orphan-pts-master", 0, &[fd.as_raw_fd()])
    }));
}

fn rpc(ep: &Endpoint, script: &str, pid: i32, fds: &[i32]) -> Result<(), String> {
    let resp = CriuResp {
        r#type: CriuReqType::Notify as i32,
        success: true,
        notify: Some(CriuNotify {
            script: Some(script.into()),
            pid: Some(pid),
        }),
        ..Default::default()
    };
    ep.send(&resp.encode_to_vec(), fds)
        .map_err(|e| e.to_string())?;
    let answer = ep
        .recv()
        .map_err(|e| e.to_string())?
        .ok_or("the client closed the socket instead of answering")?;
    let req = CriuReq::decode(answer.as_slice())
        .map_err(|e| format!("the client's answer does not decode: {e}"))?;
    if req.r#type != CriuReqType::Notify as i32 {
        return Err(format!(
            "the client answered with a {:?} request",
            CriuReqType::try_from(req.r#type).map_or("unknown", |t| t.as_str_name())
        ));
    }
    if req.notify_success != Some(true) {
        return Err("the client reported a failure".into());
    }
    Ok(())
}
