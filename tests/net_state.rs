//! Kernel state of sockets that a restore must not lose silently, each in a
//! self-checking workload that asks its own sockets after every restore: multicast
//! memberships with their source filters (`mcast`).

mod common;

use common::*;

#[test]
fn mcast_sane() {
    sanity(|e| e.start("mcast"));
}

/// Every membership (plain, source-specific, filtered; IPv4, IPv6, IPv4 on an IPv6
/// socket) is there after a `--leave-running` dump and three cycles, and a group left
/// before the dump stays left.
#[test]
fn multicast_memberships_three_cycles() {
    leave_running_then_three_cycles("mcast");
}
