//! CRIU's `--external KIND[ID]:VALUE` of the command line (LXC's), in ckpt's terms. At a
//! restore, `veth[IN]:OUT[@BRIDGE]` names the host end of the container's veth IN and
//! the bridge it joins (ckpt's `--veth-pair IN=OUT@BRIDGE`): what LXC passes for each
//! `lxc.net.N.type = veth` since CRIU 2.8 instead of `--veth-pair`. Devices ckpt does not
//! move (`macvlan[...]`, `netdev[...]`) are refused by name. Any other entry names nothing
//! a ckpt image holds and is left, logged, as CRIU leaves an external no image object
//! asks for (LXC passes a stale one for an `empty` network).

use crate::error::{invalid, unsupported, CriuError};

/// What a restore's `--external` entries ask for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restore {
    /// (IN, OUT, BRIDGE): the container's veth IN has host end OUT, a port of BRIDGE.
    pub veths: Vec<(String, String, Option<String>)>,
}

/// The restore's `--external` values.
pub fn restore(values: &[String]) -> Result<Restore, CriuError> {
    let mut out = Restore::default();
    for v in values {
        let Some((kind, id, value)) = split(v) else {
            tracing::info!(external = %v, "--external names no object of the image: left");
            continue;
        };
        match kind {
            "veth" => {
                let (host, bridge) = match value.split_once('@') {
                    Some((h, b)) => (h, Some(b.to_string())),
                    None => (value, None),
                };
                if id.is_empty() || host.is_empty() || bridge.as_deref() == Some("") {
                    return Err(invalid(format!(
                        "--external {v}: expected veth[IN]:OUT or veth[IN]:OUT@BRIDGE"
                    )));
                }
                out.veths.push((id.to_string(), host.to_string(), bridge));
            }
            "macvlan" | "netdev" => {
                return Err(unsupported(format!(
                    "--external {v}: a {kind} device is not supported by ckpt (veth only)"
                )))
            }
            _ => tracing::info!(external = %v, "--external names no object of the image: left"),
        }
    }
    Ok(out)
}

/// `KIND[ID]:VALUE` (VALUE may be empty), or None for another form.
fn split(v: &str) -> Option<(&str, &str, &str)> {
    let (kind, rest) = v.split_once('[')?;
    let (id, rest) = rest.split_once(']')?;
    let value = match rest {
        "" => "",
        r => r.strip_prefix(':')?,
    };
    Some((kind, id, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veths_and_leftovers() {
        let r = restore(&[
            "veth[eth0]:vethAB12@br-x".into(),
            "veth[eth1]:vethCD".into(),
            "console:/dev/pts/3".into(),
            "tty[8800:1a]".into(),
        ])
        .unwrap();
        assert_eq!(
            r.veths,
            [
                ("eth0".into(), "vethAB12".into(), Some("br-x".into())),
                ("eth1".into(), "vethCD".into(), None)
            ]
        );
        assert!(restore(&["macvlan[eth0]:eno1".into()]).is_err());
        assert!(restore(&["veth[]:x".into()]).is_err());
        assert!(restore(&["veth[eth0]:x@".into()]).is_err());
    }
}
