//! `criu swrk N`: CRIU's RPC service on the SEQPACKET socket inherited as fd N, as runc,
//! podman and CRI-O (go-criu) start it. One protobuf per datagram; one request per process
//! (more only while the client sets keep_open). Nothing is written to stdout or stderr:
//! on a restore they are the container's. A failure is answered success=false with
//! cr_errno and cr_errmsg, and written on an `Error` line of the client's log file.

use crate::error::{invalid, unsupported, CriuError};
use crate::notify::Listener;
use crate::rpc::{
    CriuDumpResp, CriuFeatures, CriuOpts, CriuReq, CriuReqType, CriuResp, CriuRestoreResp,
};
use crate::{log, opts, run};
use ckpt_sys::seqpacket::Endpoint;
use prost::Message;
use std::path::PathBuf;
use std::sync::Arc;

/// Serves the client on fd `arg`; the exit code (0 when every request succeeded).
pub fn serve(arg: &str) -> i32 {
    let Ok(fd) = arg.parse::<i32>() else {
        return 1;
    };
    let Ok(ep) = Endpoint::adopt_inherited(fd) else {
        return 1;
    };
    let ep = Arc::new(ep);
    let client = ep.peer_pid().unwrap_or(0);
    loop {
        let req = match ep.recv() {
            Ok(Some(bytes)) => CriuReq::decode(bytes.as_slice()),
            _ => return 1,
        };
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                let resp = failure(0, &invalid(format!("request does not decode: {e}")));
                let _ = ep.send(&resp.encode_to_vec(), &[]);
                return 1;
            }
        };
        let keep_open = req.keep_open == Some(true);
        let resp = answer(&req, client, &ep);
        let ok = resp.success;
        if ep.send(&resp.encode_to_vec(), &[]).is_err() || !ok {
            return 1;
        }
        if !keep_open {
            return 0;
        }
    }
}

fn failure(ty: i32, e: &CriuError) -> CriuResp {
    CriuResp {
        r#type: ty,
        success: false,
        cr_errno: Some(e.errno()),
        cr_errmsg: Some(e.to_string()),
        ..Default::default()
    }
}

fn answer(req: &CriuReq, client: i32, ep: &Arc<Endpoint>) -> CriuResp {
    let ty = req.r#type;
    let ok = |r: CriuResp| CriuResp {
        r#type: ty,
        success: true,
        ..r
    };
    match CriuReqType::try_from(ty) {
        Ok(CriuReqType::Version) => ok(CriuResp {
            version: Some(crate::version::message()),
            ..Default::default()
        }),
        Ok(CriuReqType::FeatureCheck) => ok(CriuResp {
            features: Some(features(req.features.as_ref())),
            ..Default::default()
        }),
        Ok(CriuReqType::Check) => {
            let usable = !ckpt_sys::probe::unusable(&ckpt_sys::probe::probe_all());
            CriuResp {
                r#type: ty,
                success: usable,
                ..Default::default()
            }
        }
        Ok(t @ (CriuReqType::Dump | CriuReqType::PreDump | CriuReqType::Restore)) => {
            let o = req.opts.clone().unwrap_or_default();
            let log_path = opts::log_path(&o, client).ok().flatten();
            match work(t, &o, client, ep, log_path.as_ref()) {
                Ok(r) => ok(r),
                Err(e) => {
                    tracing::error!("{e}");
                    log::error_line(log_path.as_deref(), &e.to_string());
                    failure(ty, &e)
                }
            }
        }
        Ok(t) => failure(
            ty,
            &unsupported(format!(
                "request {} is not supported by ckpt",
                t.as_str_name()
            )),
        ),
        Err(_) => failure(ty, &invalid(format!("unknown request type {ty}"))),
    }
}

fn work(
    t: CriuReqType,
    o: &CriuOpts,
    client: i32,
    ep: &Arc<Endpoint>,
    log_path: Option<&PathBuf>,
) -> Result<CriuResp, CriuError> {
    // The log first, so that a refused option is in it too; a log that cannot be opened
    // fails the request (the client would look for it).
    opts::log_path(o, client)?;
    log::init(log_path.map(|p| p.as_path()), o.log_level(), true).map_err(invalid)?;
    tracing::info!(
        request = t.as_str_name(),
        client,
        ckpt = env!("CARGO_PKG_VERSION"),
        "ckpt answering as CRIU"
    );
    crate::notify::install(o.notify_scripts().then(|| Listener::Rpc(ep.clone())));
    if t == CriuReqType::Restore && o.orphan_pts_master() {
        crate::notify::install_console_master(ep.clone());
    }
    match t {
        CriuReqType::Restore => {
            let r = opts::restore(o, client)?;
            let pid = match run::restore(&r)? {
                ckpt_restore::Outcome::Detached(pid) => pid,
                other => {
                    return Err(invalid(format!(
                        "restore ended in the foreground: {other:?}"
                    )))
                }
            };
            Ok(CriuResp {
                restore: Some(CriuRestoreResp { pid }),
                ..Default::default()
            })
        }
        _ => {
            let d = opts::dump(o, client, t == CriuReqType::PreDump)?;
            run::dump(&d)?;
            Ok(CriuResp {
                dump: Some(CriuDumpResp {
                    restored: Some(false),
                }),
                ..Default::default()
            })
        }
    }
}

/// FEATURE_CHECK: each feature asked about, answered from ckpt's own probes. mem_track is
/// ckpt's dirty tracking (pre-dumps); lazy pages over a page server and the pidfd store
/// are not implemented.
fn features(asked: Option<&CriuFeatures>) -> CriuFeatures {
    let asked = asked.cloned().unwrap_or_default();
    let tracking = asked.mem_track.map(|_| {
        ckpt_sys::probe::probe_all()
            .iter()
            .any(|f| f.name == "dirty-tracking" && f.status == ckpt_sys::probe::Status::Ok)
    });
    CriuFeatures {
        mem_track: tracking,
        lazy_pages: asked.lazy_pages.map(|_| false),
        pidfd_store: asked.pidfd_store.map(|_| false),
    }
}
