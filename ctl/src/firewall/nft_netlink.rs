//! Element changes written straight to the kernel as one nf_tables netlink
//! batch: the path a container start or stop takes on the nftables backend.
//!
//! Why not `nft -f` here: before it runs even a one-element script, nft
//! 1.0.6 fills its cache with the whole ruleset (every table, chain, set and
//! element), which costs 40 ms at 12,000 elements and ~9 s at 123,000. The
//! kernel's commit of a small batch costs a few ms at any table size. So the
//! controller encodes what an event changes — `NFT_MSG_DELSETELEM` /
//! `NFT_MSG_NEWSETELEM` between a batch begin and end — and sends it on a
//! `NETLINK_NETFILTER` socket. The kernel checks every message of the batch
//! before it commits any, so the batch is one transaction like a script:
//! all of it or nothing, and an error names the message that failed.
//!
//! Set and map elements keyed by addresses and ports are encoded
//! ([`encode`]), including address ranges of interval maps, which the
//! kernel holds as two elements: the range's first address (with the
//! verdict) and the address after its last, flagged as an interval's end
//! (none when the range ends at the family's last address) — what nft
//! sends for them. Anything else (declarations, rules) goes through
//! `nft -f` as before ([`NotEncodable`] says why).

use super::nft_model::{Elem, Part, SetDelta};
use netlink_packet_core::{
    Emitable, NetlinkBuffer, Nla, NLA_F_NESTED, NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const TABLE: &str = "seg";

// Attribute numbers from <linux/netfilter/nf_tables.h>.
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

// Verdict codes (<linux/netfilter.h>, nf_tables.h).
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_CONTINUE: i32 = -1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// Elements per message: keeps a message's element list far below the
/// 64 KiB an attribute can hold (an IPv6 concatenation with a verdict is
/// ~120 bytes).
const ELEMS_PER_MESSAGE: usize = 256;
/// Elements per batch: the batch goes in one `send`, which must fit the
/// socket's send buffer (~208 KiB by default). Bigger changes (a policy
/// change, a resync) are rare and go through `nft -f`.
pub const MAX_ELEMS: usize = 1024;

/// Why a delta goes through `nft -f` instead of a netlink batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not encodable as a netlink batch: {0}")]
pub struct NotEncodable(pub String);

/// One batch, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    /// The sequence number of each message the kernel acknowledges, and
    /// what it does (for an error message: `delete from set X`).
    pub acked: BTreeMap<u32, String>,
    /// The sequence number of the batch's begin (errors about the batch
    /// as a whole name it).
    pub begin_seq: u32,
}

/// The batch that applies `delta` to `table inet seg`; its messages are
/// numbered from `first_seq`.
pub fn encode(delta: &[SetDelta<'_>], first_seq: u32) -> Result<Batch, NotEncodable> {
    let total: usize = delta.iter().map(|d| d.gone.len() + d.new.len()).sum();
    if total > MAX_ELEMS {
        return Err(NotEncodable(format!("{total} elements (more than {MAX_ELEMS})")));
    }
    let mut batch = Batch { bytes: Vec::new(), acked: BTreeMap::new(), begin_seq: first_seq };
    let mut seq = first_seq;
    push_message(&mut batch.bytes, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, &[]);
    // Deletions first, as in the script: a changed verdict is a delete and an add.
    for d in delta {
        for chunk in d.gone.chunks(ELEMS_PER_MESSAGE) {
            let elems = elements(d, chunk.iter().map(|e| (*e, None)))?;
            seq += 1;
            let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM;
            push_message(
                &mut batch.bytes,
                kind,
                NLM_F_REQUEST | NLM_F_ACK,
                seq,
                NFPROTO_INET,
                0,
                &list(d, elems),
            );
            batch.acked.insert(seq, format!("delete from set {}", d.name));
        }
    }
    for d in delta {
        for chunk in d.new.chunks(ELEMS_PER_MESSAGE) {
            let elems = elements(d, chunk.iter().copied())?;
            seq += 1;
            let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM;
            let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
            push_message(&mut batch.bytes, kind, flags, seq, NFPROTO_INET, 0, &list(d, elems));
            batch.acked.insert(seq, format!("add to set {}", d.name));
        }
    }
    seq += 1;
    push_message(&mut batch.bytes, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, &[]);
    Ok(batch)
}

/// The attributes of one element message: table, set, elements.
fn list(d: &SetDelta<'_>, elems: Vec<Attr>) -> Vec<Attr> {
    vec![
        Attr::string(NFTA_SET_ELEM_LIST_TABLE, TABLE),
        Attr::string(NFTA_SET_ELEM_LIST_SET, d.name),
        Attr::Nested(NFTA_SET_ELEM_LIST_ELEMENTS, elems),
    ]
}

/// The kernel's elements for `elems` of `d`'s set: one each, or two for a
/// range of an interval set.
fn elements<'a>(
    d: &SetDelta<'_>,
    elems: impl Iterator<Item = (&'a Elem, Option<&'a str>)>,
) -> Result<Vec<Attr>, NotEncodable> {
    let mut out = Vec::new();
    for (elem, verdict) in elems {
        if !d.set.interval {
            out.push(element(key_bytes(&d.set.key, elem)?, verdict, false)?);
            continue;
        }
        let (first, after) = range_ends(&d.set.key, elem)?;
        out.push(element(first, verdict, false)?);
        if let Some(after) = after {
            out.push(element(after, None, true)?);
        }
    }
    Ok(out)
}

fn element(key: Vec<u8>, verdict: Option<&str>, interval_end: bool) -> Result<Attr, NotEncodable> {
    let mut attrs = vec![Attr::Nested(NFTA_SET_ELEM_KEY, vec![Attr::Bytes(NFTA_DATA_VALUE, key)])];
    if interval_end {
        attrs.push(Attr::Bytes(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END.to_be_bytes().to_vec()));
    }
    if let Some(v) = verdict {
        attrs
            .push(Attr::Nested(NFTA_SET_ELEM_DATA, vec![Attr::Nested(NFTA_DATA_VERDICT, verdict_attrs(v)?)]));
    }
    Ok(Attr::Nested(NFTA_LIST_ELEM, attrs))
}

/// An interval element's two keys: its first address, and the address
/// after its last (`None` past the family's last address).
fn range_ends(types: &[String], elem: &Elem) -> Result<(Vec<u8>, Option<Vec<u8>>), NotEncodable> {
    let bad = || NotEncodable(format!("interval element {elem} of key {}", types.join(" . ")));
    match (types, elem.0.as_slice()) {
        ([ty], [Part::Addrs(IpAddr::V4(a), IpAddr::V4(b))]) if ty == "ipv4_addr" && a <= b => {
            let after = u32::from(*b).checked_add(1).map(|n| n.to_be_bytes().to_vec());
            Ok((a.octets().to_vec(), after))
        }
        ([ty], [Part::Addrs(IpAddr::V6(a), IpAddr::V6(b))]) if ty == "ipv6_addr" && a <= b => {
            let after = u128::from(*b).checked_add(1).map(|n| n.to_be_bytes().to_vec());
            Ok((a.octets().to_vec(), after))
        }
        _ => Err(bad()),
    }
}

/// An element's key as the kernel holds it: each field in network byte
/// order; in a concatenation every field padded to a 32-bit register
/// (nft's `ipv4_addr . inet_service` is 4 + 4 bytes, not 4 + 2).
pub fn key_bytes(types: &[String], elem: &Elem) -> Result<Vec<u8>, NotEncodable> {
    if types.len() != elem.0.len() {
        return Err(NotEncodable(format!("element {elem} does not match key {}", types.join(" . "))));
    }
    let concat = types.len() > 1;
    let mut out = Vec::new();
    for (ty, part) in types.iter().zip(&elem.0) {
        let mut field = match (ty.as_str(), part) {
            ("ipv4_addr", Part::Addrs(IpAddr::V4(a), IpAddr::V4(b))) if a == b => a.octets().to_vec(),
            ("ipv6_addr", Part::Addrs(IpAddr::V6(a), IpAddr::V6(b))) if a == b => a.octets().to_vec(),
            ("inet_service", Part::Port(p)) => p.to_be_bytes().to_vec(),
            _ => return Err(NotEncodable(format!("{part:?} as {ty}"))),
        };
        if concat {
            field.resize(field.len().next_multiple_of(4), 0);
        }
        out.extend(field);
    }
    Ok(out)
}

/// `drop`, `accept`, `return`, `continue`, `jump CHAIN`, `goto CHAIN`.
fn verdict_attrs(v: &str) -> Result<Vec<Attr>, NotEncodable> {
    let code = |c: i32| Attr::Bytes(NFTA_VERDICT_CODE, c.to_be_bytes().to_vec());
    let (word, chain) = v.split_once(' ').map_or((v, None), |(w, c)| (w, Some(c)));
    let simple = match word {
        "drop" => Some(NF_DROP),
        "accept" => Some(NF_ACCEPT),
        "return" => Some(NFT_RETURN),
        "continue" => Some(NFT_CONTINUE),
        _ => None,
    };
    match (simple, word, chain) {
        (Some(c), _, None) => Ok(vec![code(c)]),
        (None, "jump", Some(chain)) => Ok(vec![code(NFT_JUMP), Attr::string(NFTA_VERDICT_CHAIN, chain)]),
        (None, "goto", Some(chain)) => Ok(vec![code(NFT_GOTO), Attr::string(NFTA_VERDICT_CHAIN, chain)]),
        _ => Err(NotEncodable(format!("verdict {v:?}"))),
    }
}

/// An attribute: bytes, or attributes nested in it.
#[derive(Clone, Debug)]
enum Attr {
    Bytes(u16, Vec<u8>),
    Nested(u16, Vec<Attr>),
}

impl Attr {
    /// A NUL-terminated string, as libmnl's `mnl_attr_put_strz` writes it.
    fn string(kind: u16, s: &str) -> Attr {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        Attr::Bytes(kind, bytes)
    }
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::Bytes(_, b) => b.len(),
            Attr::Nested(_, inner) => inner.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::Bytes(k, _) => *k,
            Attr::Nested(k, _) => *k | NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attr::Bytes(_, b) => buffer[..b.len()].copy_from_slice(b),
            Attr::Nested(_, inner) => inner.as_slice().emit(buffer),
        }
    }
}

/// Appends one netlink message: header, `nfgenmsg`, attributes.
fn push_message(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[Attr]) {
    const HEADER: usize = 16;
    let len = HEADER + 4 + attrs.buffer_len();
    let start = out.len();
    out.resize(start + len, 0);
    let mut msg = NetlinkBuffer::new(&mut out[start..]);
    msg.set_length(len as u32);
    msg.set_message_type(kind);
    msg.set_flags(flags);
    msg.set_sequence_number(seq);
    msg.set_port_number(0);
    let payload = msg.payload_mut();
    // nfgenmsg: family, version (NFNETLINK_V0), resource id (big endian).
    payload[0] = family;
    payload[1] = 0;
    payload[2..4].copy_from_slice(&res_id.to_be_bytes());
    attrs.emit(&mut payload[4..]);
}

/// Reads the kernel's answers to `batch` in `bytes` (one `recv`): each
/// answered message leaves `pending`; each error (sequence number, errno)
/// goes to `errors`. An error about the batch as a whole empties `pending`
/// (no other answer comes).
pub fn read_answers(bytes: &[u8], batch: &Batch, pending: &mut Vec<u32>, errors: &mut Vec<(u32, i32)>) {
    let mut off = 0;
    while off + 16 <= bytes.len() {
        let Ok(msg) = NetlinkBuffer::new_checked(&bytes[off..]) else { break };
        let len = msg.length() as usize;
        if msg.message_type() == NLMSG_ERROR && msg.payload().len() >= 20 {
            let p = msg.payload();
            let code = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
            // The request's own header follows the error code; its sequence number at 4 + 8.
            let seq = u32::from_ne_bytes([p[12], p[13], p[14], p[15]]);
            pending.retain(|s| *s != seq);
            if code != 0 {
                errors.push((seq, -code));
                // An error about the batch as a whole: no more answers come.
                if seq == batch.begin_seq || !batch.acked.contains_key(&seq) {
                    pending.clear();
                }
            }
        }
        off += len.max(16).next_multiple_of(4);
    }
}

#[cfg(test)]
#[path = "nft_netlink_tests.rs"]
mod tests;
