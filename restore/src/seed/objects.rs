//! The table's objects a seed creates before it forks its children (`fdtable.rs`): each
//! description goes to its slot, where the seeds forked after find it.

use super::access::Identity;
use crate::fdtable::{self, Object};
use ckpt_images::pb;

/// Creates every object of `objects` (this seed's share of the plan).
pub fn create(objects: &[Object], floor: i32) -> Result<(), String> {
    // Established TCP connections last: in repair mode they share their port with anyone,
    // but a listener without SO_REUSEADDR binding after them would find it taken.
    let (conns, others): (Vec<&Object>, Vec<&Object>) = objects
        .iter()
        .partition(|o| crate::net::is_connection(&o.descs[0].0));
    for o in others.into_iter().chain(conns) {
        let first = &o.descs[0].0;
        let what = match (&first.pipe, &first.inet) {
            (Some(_), _) => format!("pipe:[{}]", first.object),
            (_, Some(i)) => crate::net::name(i),
            _ => first.path.clone(),
        };
        match (o.kind, &o.by_path) {
            (pb::FdKind::FdPipe, _) => fdtable::pipe::create(&o.descs),
            (pb::FdKind::FdInetSocket, _) => crate::net::create_at(&o.descs),
            (_, Some((fd, creds))) => by_path(fd, creds.as_ref(), o.descs[0].1, floor),
            _ => Err("nothing says how to create it".into()),
        }
        .map_err(|e| format!("shared {what}: {e}"))?;
    }
    Ok(())
}

/// A description opened by path, as its first holder (`fd`, with `creds`) would, at `slot`.
fn by_path(fd: &pb::Fd, creds: Option<&pb::Creds>, slot: i32, floor: i32) -> Result<(), String> {
    let mut id = Identity::new(creds)?;
    id.image()?;
    let mut at = fd.clone();
    at.fd = slot;
    at.cloexec = false;
    let r = super::open_one(&at, floor, &mut id);
    id.root()?;
    r
}
