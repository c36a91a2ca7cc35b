//! The pre-shared key: 32 bytes, in a file as 64 hex digits (`openssl rand -hex 32`) or
//! as the raw bytes (`head -c 32 /dev/urandom`). Both ends prove they hold it before a
//! byte of an image is accepted.

use crate::error::{HaulError, R};
use std::path::Path;

pub const LEN: usize = 32;

pub fn load(path: &Path) -> R<[u8; LEN]> {
    let bytes = std::fs::read(path)
        .map_err(|e| HaulError::Key(format!("key file {}: {e}", path.display())))?;
    parse(&bytes).ok_or_else(|| {
        HaulError::Key(format!(
            "key file {}: expected 32 bytes, or 64 hex digits (`openssl rand -hex 32`), found {} bytes",
            path.display(),
            bytes.len()
        ))
    })
}

fn parse(bytes: &[u8]) -> Option<[u8; LEN]> {
    if bytes.len() == LEN {
        let out: [u8; LEN] = bytes.try_into().ok()?;
        return (out != [0u8; LEN]).then_some(out);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.len() != 2 * LEN {
        return None;
    }
    let mut out = [0u8; LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    // A key of all zeros is the likely result of a mistake (an empty /dev/zero read).
    (out != [0u8; LEN]).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_raw_keys() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
        let k = parse(hex.as_bytes()).unwrap();
        assert_eq!(k[1], 0x11);
        assert_eq!(parse(&k), Some(k));
        assert_eq!(parse(b"short"), None);
        assert_eq!(parse(&[0u8; 64][..]), None);
        assert_eq!(parse("0".repeat(64).as_bytes()), None);
    }
}
