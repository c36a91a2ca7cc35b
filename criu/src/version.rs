//! The CRIU version ckpt answers as. runc 1.1.5 needs 3.0 (the VERSION call), podman 4.3
//! 3.11, CRI-O 3.16, runc's --lsm-profile 3.16; 3.17.1 is what Debian 12 ships, so what
//! these tools were tested with. No git id is sent: go-criu would then count it as the
//! next minor release.

/// (major, minor, sublevel).
pub const VERSION: (i32, i32, i32) = (3, 17, 1);

/// `criu --version`, as CRIU prints it.
pub const VERSION_TEXT: &str = "Version: 3.17.1\n";

/// The VERSION answer.
pub fn message() -> crate::rpc::CriuVersion {
    crate::rpc::CriuVersion {
        major_number: VERSION.0,
        minor_number: VERSION.1,
        sublevel: Some(VERSION.2),
        gitid: None,
        extra: None,
        name: Some(format!("ckpt {}", env!("CARGO_PKG_VERSION"))),
    }
}
