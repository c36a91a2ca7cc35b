//! A seed's children: each forked with its dumped pid (clone3 set_tid) once the parent is
//! in its session and group, and each running its own seed; a zombie's seed exits at once
//! with the dumped wait status, never reaped here: its restored parent's wait gets it.

use super::SeedPlan;
use crate::tree;
use ckpt_sys::process::Forked;
use ckpt_sys::Pid;

/// Everything every seed of the tree may need, in memory before the first fork.
pub struct Seeds<'a> {
    pub tree: &'a tree::Plan,
    /// One per live process, indexed by `Node::live`.
    pub plans: &'a [SeedPlan],
    /// ckpt's pid: the root seed's parent.
    pub ckpt: i32,
    /// The tree's shared files: who creates which, in which slot.
    pub fds: &'a crate::fdtable::Plan,
}

impl Seeds<'_> {
    /// The dumped name of the process at `node` (a zombie's too).
    pub fn comm(&self, node: usize) -> String {
        let n = &self.tree.nodes[node];
        match n.live {
            Some(l) => self.plans[l].comm.clone(),
            None => n.comm.clone(),
        }
    }
}

/// Forks the seeds of node `me`'s children, in order; returns once its zombies have
/// exited (left unreaped), so that none is still running when ckpt takes over.
pub fn fork_children(seeds: &Seeds, me: usize) -> Result<(), String> {
    let mut zombies = Vec::new();
    for &c in &seeds.tree.nodes[me].children {
        let n = &seeds.tree.nodes[c];
        match ckpt_sys::process::fork_with_pid(Pid::from_raw(n.pid)) {
            Ok(Forked::Child) => match n.zombie {
                Some(status) => become_zombie(n, status),
                None => super::run(seeds, c),
            },
            Ok(Forked::Parent(p)) => {
                if n.zombie.is_some() {
                    zombies.push(p);
                }
            }
            Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST) => {
                return Err(crate::pidheld::message(n.pid, &seeds.comm(c)))
            }
            Err(e) => return Err(format!("pid {}: {e}", n.pid)),
        }
    }
    for z in zombies {
        ckpt_sys::process::wait_exited_keep(z).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn become_zombie(n: &tree::Node, status: i32) -> ! {
    if let Ok(name) = std::ffi::CString::new(n.comm.as_bytes()) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    if n.setsid {
        let _ = nix::unistd::setsid();
    } else if n.setpgid {
        let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    }
    ckpt_sys::process::die_with_status(status)
}
