//! Random values from the kernel: UUIDs' bytes, generated MACs.

use std::io;

use crate::{host::state::StateError, model::mac::Mac};

/// `N` random bytes from the kernel (getrandom(2)).
pub fn bytes<const N: usize>() -> Result<[u8; N], StateError> {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(StateError::Io {
                path: "getrandom(2)".into(),
                source: e,
            });
        }
        filled += n as usize;
    }
    Ok(buf)
}

/// A random MAC in libvirt's 52:54:00 prefix, as libvirt gives a guest or
/// a bridge without `<mac>`.
pub fn libvirt_mac() -> Result<Mac, StateError> {
    let r: [u8; 3] = bytes()?;
    Ok(Mac([0x52, 0x54, 0x00, r[0], r[1], r[2]]))
}
