//! Where `segctl secret put` gets a value: a file, stdin, or the system
//! random generator. Every path reads straight into a [`SecretBytes`] and
//! refuses more than [`MAX_VALUE_LEN`] before sending anything.

use anyhow::{anyhow, bail, Context, Result};
use ring::rand::{SecureRandom, SystemRandom};
use seg_common::name::MAX_VALUE_LEN;
use seg_common::secret::SecretBytes;
use std::fs::File;
use std::io::Read;
use std::path::Path;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn limit_text() -> String {
    format!("the limit is {MAX_VALUE_LEN} (512 KiB)")
}

/// Reads a file. A regular file is sized from its metadata, so an oversized
/// one is refused before any of it is read.
pub fn from_file(path: &Path) -> Result<SecretBytes> {
    let shown = path.display();
    let mut file = File::open(path).with_context(|| format!("cannot read {shown}"))?;
    let meta = file.metadata().with_context(|| format!("cannot read {shown}"))?;
    if !meta.is_file() {
        // A pipe or device (e.g. <(command)): no size known up front.
        return read_bounded(&mut file, &format!("{shown}"));
    }
    let len = meta.len();
    if len > MAX_VALUE_LEN as u64 {
        bail!("file {shown} is {len} bytes; {}", limit_text());
    }
    let mut value = SecretBytes::zeroed(len as usize);
    file.read_exact(value.as_mut_bytes()).with_context(|| format!("cannot read {shown}"))?;
    let mut probe = [0u8; 1];
    if file.read(&mut probe).with_context(|| format!("cannot read {shown}"))? != 0 {
        bail!("file {shown} grew while it was being read; try again once it is complete");
    }
    Ok(value)
}

/// Reads standard input up to the limit (unbuffered: no copy is left in
/// std's stdin buffer).
pub fn from_stdin() -> Result<SecretBytes> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().context("cannot use standard input")?;
    read_bounded(&mut File::from(fd), "standard input")
}

/// Reads until EOF into a scratch secret one byte larger than the limit,
/// then copies the exact length out (the scratch is wiped on drop).
pub fn read_bounded(reader: &mut impl Read, what: &str) -> Result<SecretBytes> {
    let mut scratch = SecretBytes::zeroed(MAX_VALUE_LEN + 1);
    let mut filled = 0;
    loop {
        let n = match reader.read(&mut scratch.as_mut_bytes()[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow!(e).context(format!("cannot read {what}"))),
        };
        if n == 0 {
            break;
        }
        filled += n;
        if filled > MAX_VALUE_LEN {
            bail!("{what} holds more than {MAX_VALUE_LEN} bytes; {}", limit_text());
        }
    }
    Ok(SecretBytes::from_slice(&scratch.expose()[..filled]))
}

/// `len` random characters from `[A-Za-z0-9]`, made directly in a secret.
/// Bytes ≥ 248 are skipped so every character is equally likely (248 is
/// the largest multiple of 62 that fits in a byte).
pub fn generate(len: usize) -> Result<SecretBytes> {
    if len == 0 || len > MAX_VALUE_LEN {
        bail!("--generate takes a length from 1 to {MAX_VALUE_LEN}; got {len}");
    }
    let rng = SystemRandom::new();
    let mut out = SecretBytes::zeroed(len);
    let mut pool = SecretBytes::zeroed(512);
    let mut filled = 0;
    while filled < len {
        rng.fill(pool.as_mut_bytes()).map_err(|_| anyhow!("the system random number generator failed"))?;
        for &b in pool.expose().iter().filter(|&&b| b < 248) {
            if filled == len {
                break;
            }
            out.as_mut_bytes()[filled] = ALPHABET[usize::from(b % 62)];
            filled += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_use_the_alphabet_and_differ() {
        let a = generate(64).unwrap();
        let b = generate(64).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.expose().iter().all(|c| c.is_ascii_alphanumeric()));
        assert!(!a.ct_eq(b.expose()));
        assert_eq!(generate(5000).unwrap().len(), 5000);
        assert!(generate(0).is_err());
        assert!(generate(MAX_VALUE_LEN + 1).is_err());
    }

    #[test]
    fn files_are_read_exactly_and_sized_first() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, b"hunter2\n").unwrap();
        assert_eq!(from_file(&ok).unwrap().expose(), b"hunter2\n");
        let big = dir.path().join("big");
        std::fs::File::create(&big).unwrap().set_len(600 * 1024).unwrap();
        let err = format!("{:#}", from_file(&big).unwrap_err());
        assert!(err.contains("is 614400 bytes; the limit is 524288 (512 KiB)"), "{err}");
        let err = format!("{:#}", from_file(&dir.path().join("missing")).unwrap_err());
        assert!(err.contains("cannot read") && err.contains("No such file"), "{err}");
    }

    #[test]
    fn bounded_reads_stop_at_the_limit() {
        let exact = vec![7u8; MAX_VALUE_LEN];
        assert_eq!(read_bounded(&mut exact.as_slice(), "x").unwrap().len(), MAX_VALUE_LEN);
        let over = vec![7u8; MAX_VALUE_LEN + 10];
        let err = read_bounded(&mut over.as_slice(), "standard input").unwrap_err().to_string();
        assert!(err.contains("standard input holds more than 524288 bytes"), "{err}");
        assert!(read_bounded(&mut &b""[..], "x").unwrap().is_empty());
    }
}
