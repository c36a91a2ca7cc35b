//! The table's objects a seed creates before it forks its children (`fdtable.rs`): each
//! description goes to its slot, where the seeds forked after find it.

use super::access::Identity;
use crate::fdtable::{self, Object};
use ckpt_images::pb;

/// Creates every object of `objects` (this seed's share of the plan).
pub fn create(objects: &[Object], floor: i32) -> Result<(), String> {
    // Established TCP connections last: in repair mode they share their port with anyone,
    // but a listener without SO_REUSEADDR binding after them would find it taken.
    // Sockets sending files in flight after those files (made here or by an ancestor).
    let (conns, others): (Vec<&Object>, Vec<&Object>) = objects
        .iter()
        .partition(|o| crate::net::is_connection(&o.descs[0].0));
    let (senders, others): (Vec<&Object>, Vec<&Object>) =
        others.into_iter().partition(|o| !o.in_flight.is_empty());
    let senders = carried_first(senders)?;
    for o in others.into_iter().chain(senders).chain(conns) {
        let (first, slot) = &o.descs[0];
        let what = match o.kind {
            pb::FdKind::FdPipe => format!("pipe:[{}]", first.object),
            pb::FdKind::FdEventfd => "eventfd".into(),
            pb::FdKind::FdSignalfd => "signalfd".into(),
            pb::FdKind::FdTimerfd => "timerfd".into(),
            pb::FdKind::FdInotify => "inotify".into(),
            pb::FdKind::FdFanotify => "fanotify".into(),
            pb::FdKind::FdMemfd => format!(
                "memfd:{}",
                first.memfd.as_ref().map_or("", |m| m.name.as_str())
            ),
            pb::FdKind::FdDeleted => format!("{} (deleted)", first.path),
            pb::FdKind::FdInetSocket => first
                .inet
                .as_ref()
                .map(crate::net::name)
                .unwrap_or_default(),
            pb::FdKind::FdPacketSocket => first
                .packet
                .as_ref()
                .map(crate::net::packet::name)
                .unwrap_or_default(),
            pb::FdKind::FdNetlinkSocket => first
                .netlink
                .as_ref()
                .map(crate::net::netlink::name)
                .unwrap_or_default(),
            pb::FdKind::FdUnixSocket => format!(
                "unix socket:[{}]",
                first.unix.as_ref().map_or(0, |u| u.inode)
            ),
            pb::FdKind::FdTty => format!("/dev/pts/{}", first.tty.as_ref().map_or(0, |t| t.index)),
            _ => first.path.clone(),
        };
        let (fd, creds) = &o.holder;
        match o.kind {
            pb::FdKind::FdPipe => fdtable::pipe::create(&o.descs),
            pb::FdKind::FdEventfd => fdtable::anon::eventfd(first, *slot),
            pb::FdKind::FdSignalfd => fdtable::anon::signalfd(first, *slot),
            pb::FdKind::FdTimerfd => fdtable::anon::timerfd(first, *slot),
            // Its watches are added as its holder: paths it could read.
            pb::FdKind::FdInotify => {
                as_holder(creds.as_ref(), |_| fdtable::anon::inotify(first, *slot))
            }
            // Its marks are made as its holder: paths it could reach.
            pb::FdKind::FdFanotify => {
                as_holder(creds.as_ref(), |_| fdtable::fanotify::create(first, *slot))
            }
            pb::FdKind::FdMemfd => fdtable::contents::create(&o.descs),
            pb::FdKind::FdInetSocket => crate::net::create_at(&o.descs),
            pb::FdKind::FdNetlinkSocket => crate::net::netlink::create_at(&o.descs),
            pb::FdKind::FdPacketSocket => crate::net::packet::create_at(&o.descs),
            pb::FdKind::FdUnixSocket => fdtable::unix::create(&o.descs, &o.in_flight),
            pb::FdKind::FdTty => fdtable::tty::create(&o.descs),
            // Made in its directory as its holder would.
            pb::FdKind::FdDeleted => {
                as_holder(creds.as_ref(), |_| fdtable::contents::create(&o.descs))
            }
            _ => by_path(fd, creds.as_ref(), *slot, floor),
        }
        .map_err(|e| {
            format!(
                "(shared with pid {} fd {}, {what}): {e}",
                o.holder_pid, fd.fd
            )
        })?;
    }
    Ok(())
}

/// Sockets sending files in flight, each after the sockets it sends (a socket in flight
/// may carry more in its queue); one sending a socket of its own object sends its own.
fn carried_first(mut left: Vec<&Object>) -> Result<Vec<&Object>, String> {
    let ids = |o: &Object| o.descs.iter().map(|(d, _)| d.id).collect::<Vec<u64>>();
    let mut out: Vec<&Object> = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let waiting: Vec<u64> = left.iter().flat_map(|o| ids(o)).collect();
        let ready = left.iter().position(|o| {
            let own = ids(o);
            o.in_flight
                .iter()
                .all(|(id, _)| own.contains(id) || !waiting.contains(id))
        });
        let Some(at) = ready else {
            return Err(format!(
                "unix sockets carry each other in flight round (socket:[{}] among them); none \
                 can be made first",
                left[0].descs[0].0.unix.as_ref().map_or(0, |u| u.inode)
            ));
        };
        out.push(left.remove(at));
    }
    Ok(out)
}

/// Runs `f` under the file-system identity of a holder with `creds`.
fn as_holder(
    creds: Option<&pb::Creds>,
    f: impl FnOnce(&mut Identity) -> Result<(), String>,
) -> Result<(), String> {
    let mut id = Identity::new(creds)?;
    id.image()?;
    let r = f(&mut id);
    id.root()?;
    r
}

/// A description opened by path, as its first holder (`fd`, with `creds`) would, at `slot`.
fn by_path(fd: &pb::Fd, creds: Option<&pb::Creds>, slot: i32, floor: i32) -> Result<(), String> {
    as_holder(creds, |id| {
        let mut at = fd.clone();
        at.fd = slot;
        at.cloexec = false;
        super::open_one(&at, floor, id)
    })
}
