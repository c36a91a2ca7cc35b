//! Credentials, per thread: ids, groups, the capability sets and securebits, injected in
//! the one order that works (see `creds`).

use super::{Puppet, R};
use crate::RestoreError;
use ckpt_images::pb;

const PR_SET_KEEPCAPS: u64 = 8;
const PR_CAPBSET_DROP: u64 = 24;
pub(super) const PR_GET_SECUREBITS: u64 = 27;
const PR_SET_SECUREBITS: u64 = 28;
const PR_CAP_AMBIENT: u64 = 47;
const PR_CAP_AMBIENT_RAISE: u64 = 2;
const PR_CAP_AMBIENT_CLEAR_ALL: u64 = 4;

impl Puppet<'_> {
    /// Credentials, when they differ from the seed's (ckpt's own, root with full caps).
    ///
    /// The order is forced by what each step needs:
    /// 1. keep-caps on, then groups and ids: the permitted set survives the uid change;
    /// 2. capset E = P = the seed's full set, I = the image's: CAP_SETPCAP is effective
    ///    again for what follows, and the inheritable set goes in while the bounding set
    ///    is still full (a new inheritable cap must be in the bounding set);
    /// 3. PR_CAPBSET_DROP of every cap the image's bounding set lacks;
    /// 4. ambient caps (each must be in P and I, and SECBIT_NO_CAP_AMBIENT_RAISE not yet
    ///    set);
    /// 5. PR_SET_SECUREBITS: needs CAP_SETPCAP, and after the uid change so the image's
    ///    bits (no keep-caps, locks) cannot get in its way;
    /// 6. capset of the image's E, P, I: only ever a reduction; the ambient set stays,
    ///    as it is inside P and I.
    ///
    /// `c`: the credentials of the thread the calls go to. Returns whether anything had
    /// to change.
    pub(super) fn creds(&mut self, c: Option<pb::Creds>) -> R<bool> {
        let Some(c) = c else {
            return Ok(false);
        };
        // Per thread: the status of the thread the calls go to.
        let st = ckpt_sys::proc::status(self.remote.pid())?;
        // The main thread's were asked in `run`'s first batch; a thread's are asked here.
        let seed_bits = match self.seed_securebits {
            Some(bits) if self.remote.pid() == self.pid => bits,
            _ => self.call(
                "prctl(PR_GET_SECUREBITS)",
                libc::SYS_prctl,
                &[PR_GET_SECUREBITS],
            )? as u32,
        };
        let same_ids = c.uid.iter().all(|&u| u == st.euid && u == st.ruid)
            && c.gid.iter().all(|&g| g == st.egid && g == st.rgid);
        let mut groups: Vec<u32> = st.groups.iter().map(|&g| g as u32).collect();
        groups.sort();
        let mut want_groups = c.groups.clone();
        want_groups.sort();
        let seed_bnd = st.capbnd.unwrap_or(0);
        let seed_amb = st.capamb.unwrap_or(0);
        let same_caps = c.cap_eff == st.capeff
            && c.cap_prm == st.capprm
            && c.cap_inh == st.capinh
            && c.cap_bnd == seed_bnd
            && c.cap_amb == seed_amb
            && c.securebits == seed_bits;
        if same_ids && groups == want_groups && same_caps {
            return Ok(false);
        }
        if c.uid.len() < 3 || c.gid.len() < 3 {
            return Err(RestoreError::Refused(
                "credentials record is incomplete".into(),
            ));
        }
        let pid = self.pid;
        let refuse = |what: String| RestoreError::Refused(format!("pid {pid}: {what}"));
        if c.cap_prm & !st.capprm != 0 || c.cap_bnd & !seed_bnd != 0 {
            return Err(refuse(format!(
                "the image holds capabilities ckpt does not have (permitted {:#x}, bounding \
                 {:#x}; ckpt has {:#x}, {:#x})",
                c.cap_prm, c.cap_bnd, st.capprm, seed_bnd
            )));
        }
        if c.cap_amb & !(c.cap_prm & c.cap_inh) != 0 {
            return Err(refuse(format!(
                "ambient capabilities {:#x} are not both permitted and inheritable",
                c.cap_amb
            )));
        }
        self.call(
            "prctl(PR_SET_KEEPCAPS, 1)",
            libc::SYS_prctl,
            &[PR_SET_KEEPCAPS, 1],
        )?;
        if !(same_ids && groups == want_groups) {
            // Set from inside: in a container's user namespace, its ids there.
            let c = match &self.plan.userns {
                Some(ids) => ids.creds(&c, &|| format!("pid {pid}"))?,
                None => c.clone(),
            };
            let gb: Vec<u8> = c.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
            let at = self.put(0, &gb)?;
            self.call(
                "setgroups",
                libc::SYS_setgroups,
                &[c.groups.len() as u64, at],
            )?;
            self.call(
                "setresgid",
                libc::SYS_setresgid,
                &[c.gid[0] as u64, c.gid[1] as u64, c.gid[2] as u64],
            )?;
            self.call(
                "setresuid",
                libc::SYS_setresuid,
                &[c.uid[0] as u64, c.uid[1] as u64, c.uid[2] as u64],
            )?;
        }
        self.capset("capset of the full set", st.capprm, st.capprm, c.cap_inh)?;
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(40)
            .min(63);
        for cap in 0..=last_cap {
            let bit = 1u64 << cap;
            if seed_bnd & bit != 0 && c.cap_bnd & bit == 0 {
                self.call(
                    &format!("prctl(PR_CAPBSET_DROP, {cap})"),
                    libc::SYS_prctl,
                    &[PR_CAPBSET_DROP, cap as u64],
                )?;
            }
        }
        if seed_amb != 0 {
            self.call(
                "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
                libc::SYS_prctl,
                &[PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0],
            )?;
        }
        for cap in 0..=last_cap {
            if c.cap_amb & (1u64 << cap) != 0 {
                self.call(
                    &format!("prctl(PR_CAP_AMBIENT_RAISE, {cap})"),
                    libc::SYS_prctl,
                    &[PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap as u64, 0, 0],
                )?;
            }
        }
        self.call(
            &format!("prctl(PR_SET_SECUREBITS, {:#x})", c.securebits),
            libc::SYS_prctl,
            &[PR_SET_SECUREBITS, c.securebits as u64],
        )?;
        self.capset("capset", c.cap_eff, c.cap_prm, c.cap_inh)?;
        Ok(true)
    }

    /// capset(2), _LINUX_CAPABILITY_VERSION_3: header {version, pid}, two data words.
    pub(super) fn capset(&mut self, what: &str, eff: u64, prm: u64, inh: u64) -> R<()> {
        let mut b = Vec::new();
        b.extend_from_slice(&0x2008_0522u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for shift in [0, 32] {
            for v in [eff, prm, inh] {
                b.extend_from_slice(&((v >> shift) as u32).to_le_bytes());
            }
        }
        let at = self.put(0, &b)?;
        self.call(
            &format!("{what} (E {eff:#x}, P {prm:#x}, I {inh:#x})"),
            libc::SYS_capset,
            &[at, at + 8],
        )?;
        Ok(())
    }
}
