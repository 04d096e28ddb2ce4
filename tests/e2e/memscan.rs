//! Reads a live process's memory (every readable mapping of
//! `/proc/<pid>/smaps`, through `/proc/<pid>/mem`) and finds fragments of
//! known values in it, as an attacker with a memory dump would.
//!
//! A fragment is a run of at least [`MIN_RUN`] bytes equal to consecutive
//! bytes of a value. The values are random, so a 64-byte run cannot occur by
//! chance. Every 64-byte run covers 8 consecutive 8-aligned words of memory,
//! so the scan only looks up memory's aligned words in an index of every
//! 8-byte window of every value (a bitset first, then a map), then grows each
//! hit both ways to its full length.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileExt;

/// The shortest run of a value's bytes that counts as a copy.
pub const MIN_RUN: usize = 64;
/// Bits of the bitset that filters words before the exact map lookup.
const FILTER_BITS: u32 = 27;

/// One mapping of the process.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub name: String,
    /// `VmFlags` has `lo`: the range is `mlock`ed (never swapped out).
    pub locked: bool,
}

/// The mappings of `pid`, from `/proc/<pid>/smaps`.
pub fn mappings(pid: u32) -> Vec<Mapping> {
    let path = format!("/proc/{pid}/smaps");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e} (run as root)"));
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let last = out.last_mut().expect("VmFlags line before any mapping in smaps");
            last.locked = flags.split_whitespace().any(|f| f == "lo");
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(range) = fields.next().filter(|r| r.contains('-') && !r.ends_with(':')) else { continue };
        let (a, b) = range.split_once('-').expect("range has a dash");
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
        let perms = fields.next().unwrap_or("").to_owned();
        let name = fields.nth(3).unwrap_or("").to_owned();
        out.push(Mapping { start, end, perms, name, locked: false });
    }
    assert!(!out.is_empty(), "{path} lists no mappings");
    out
}

/// A fragment of a value found in memory.
#[derive(Debug, Clone)]
pub struct Hit {
    pub value: usize,
    pub addr: u64,
    pub len: usize,
    pub locked: bool,
    pub mapping: String,
}

/// Every 8-byte window of every value, for the scan.
pub struct Index<'a> {
    values: Vec<&'a [u8]>,
    filter: Vec<u64>,
    words: HashMap<u64, (u32, u32)>,
}

fn slot(word: u64) -> usize {
    (word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FILTER_BITS)) as usize
}

fn word_at(buf: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"))
}

impl<'a> Index<'a> {
    pub fn new(values: &[&'a [u8]]) -> Index<'a> {
        let mut index =
            Index { values: values.to_vec(), filter: vec![0; 1 << (FILTER_BITS - 6)], words: HashMap::new() };
        for (v, value) in values.iter().enumerate() {
            assert!(value.len() >= MIN_RUN, "value {v} is shorter than {MIN_RUN} bytes");
            for off in 0..=value.len() - 8 {
                let w = word_at(value, off);
                index.filter[slot(w) >> 6] |= 1 << (slot(w) & 63);
                index.words.entry(w).or_insert((v as u32, off as u32));
            }
        }
        index
    }

    /// The fragments of the values in `buf` (memory at `base`).
    fn scan(&self, buf: &[u8], base: u64, map: &Mapping, hits: &mut Vec<Hit>) {
        let mut i = 0;
        while i + 8 <= buf.len() {
            let w = word_at(buf, i);
            let s = slot(w);
            if self.filter[s >> 6] & (1 << (s & 63)) == 0 {
                i += 8;
                continue;
            }
            let Some(&(v, off)) = self.words.get(&w) else {
                i += 8;
                continue;
            };
            let value = self.values[v as usize];
            let (off, mut back, mut fwd) = (off as usize, 0, 8);
            while back < off && back < i && buf[i - back - 1] == value[off - back - 1] {
                back += 1;
            }
            while off + fwd < value.len() && i + fwd < buf.len() && buf[i + fwd] == value[off + fwd] {
                fwd += 1;
            }
            if back + fwd >= MIN_RUN {
                let addr = base + (i - back) as u64;
                hits.push(Hit {
                    value: v as usize,
                    addr,
                    len: back + fwd,
                    locked: map.locked,
                    mapping: label(map),
                });
            }
            // Continue at the first aligned word past this run.
            i = (i + fwd).next_multiple_of(8);
        }
    }
}

fn label(m: &Mapping) -> String {
    let name = if m.name.is_empty() { "anonymous" } else { &m.name };
    format!("{:x}-{:x} {} {name}{}", m.start, m.end, m.perms, if m.locked { " (mlocked)" } else { "" })
}

/// What one scan of the process's memory found.
pub struct Scan {
    pub hits: Vec<Hit>,
    pub bytes_read: u64,
    /// Readable mappings the kernel would not let us read (e.g. `[vvar]`).
    pub unreadable: Vec<String>,
}

/// Reads every readable mapping of `pid` and finds the values of `index` in it.
pub fn scan(pid: u32, index: &Index<'_>) -> Scan {
    let path = format!("/proc/{pid}/mem");
    let mem =
        fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e} (needs root / CAP_SYS_PTRACE)"));
    let mut out = Scan { hits: Vec::new(), bytes_read: 0, unreadable: Vec::new() };
    for map in mappings(pid).iter().filter(|m| m.perms.starts_with('r')) {
        let mut buf = vec![0u8; (map.end - map.start) as usize];
        match mem.read_exact_at(&mut buf, map.start) {
            Ok(()) => {
                out.bytes_read += buf.len() as u64;
                index.scan(&buf, map.start, map, &mut out.hits);
            }
            Err(_) => out.unreadable.push(label(map)),
        }
    }
    assert!(out.bytes_read > 0, "nothing of {path} could be read");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_runs_of_64_bytes_at_any_alignment_and_not_shorter() {
        let value: Vec<u8> = (0..1000).map(|_| fastrand::u8(..)).collect();
        let index = Index::new(&[&value]);
        let map = Mapping { start: 0, end: 0, perms: "rw-p".into(), name: String::new(), locked: false };
        for (at, from, len) in [(3usize, 100usize, 64usize), (64, 0, 1000), (13, 937, 63)] {
            let mut buf = vec![0u8; 4096];
            buf[at..at + len].copy_from_slice(&value[from..from + len]);
            let mut hits = Vec::new();
            index.scan(&buf, 0x1000, &map, &mut hits);
            if len >= MIN_RUN {
                assert_eq!(hits.len(), 1, "{at} {from} {len}: {hits:?}");
                assert_eq!((hits[0].addr, hits[0].len), (0x1000 + at as u64, len));
            } else {
                assert!(hits.is_empty(), "{hits:?}");
            }
        }
    }
}
