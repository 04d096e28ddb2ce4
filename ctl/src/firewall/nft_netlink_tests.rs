use super::*;
use crate::firewall::nft_model::Set;
use std::net::{Ipv4Addr, Ipv6Addr};

fn v4(s: &str) -> Part {
    let a: Ipv4Addr = s.parse().unwrap();
    Part::Addrs(a.into(), a.into())
}

fn v6(s: &str) -> Part {
    let a: Ipv6Addr = s.parse().unwrap();
    Part::Addrs(a.into(), a.into())
}

fn types(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

#[test]
fn keys_are_in_network_order_and_concatenations_pad_each_field_to_a_register() {
    assert_eq!(key_bytes(&types(&["ipv4_addr"]), &Elem(vec![v4("10.1.2.3")])).unwrap(), [10, 1, 2, 3]);
    let six = key_bytes(&types(&["ipv6_addr"]), &Elem(vec![v6("fd00::1")])).unwrap();
    assert_eq!(six.len(), 16);
    assert_eq!((six[0], six[1], six[15]), (0xfd, 0, 1));
    let published = types(&["ipv4_addr", "inet_service", "ipv4_addr", "inet_service"]);
    let elem = Elem(vec![v4("10.0.0.5"), Part::Port(80), v4("192.0.2.1"), Part::Port(8080)]);
    assert_eq!(
        key_bytes(&published, &elem).unwrap(),
        [10, 0, 0, 5, 0, 80, 0, 0, 192, 0, 2, 1, 0x1f, 0x90, 0, 0]
    );
}

#[test]
fn what_the_kernel_would_not_take_from_us_is_left_to_nft() {
    let range = Elem(vec![Part::Addrs("10.0.0.0".parse().unwrap(), "10.0.0.255".parse().unwrap())]);
    assert!(key_bytes(&types(&["ipv4_addr"]), &range).is_err(), "a range is not an address");
    assert!(key_bytes(&types(&["ipv6_addr"]), &Elem(vec![v4("10.0.0.1")])).is_err(), "family mismatch");
    assert!(key_bytes(&types(&["ipv4_addr", "inet_service"]), &Elem(vec![v4("10.0.0.1")])).is_err());
    let e = Elem(vec![v4("10.0.0.1")]);
    let map = Set { key: types(&["ipv4_addr"]), verdicts: true, ..Set::default() };
    let delta = [SetDelta { name: "M", set: &map, gone: vec![], new: vec![(&e, Some("queue"))] }];
    assert_eq!(encode(&delta, 1).unwrap_err(), NotEncodable("verdict \"queue\"".into()));
    let many: Vec<Elem> =
        (0..=MAX_ELEMS as u32).map(|i| Elem(vec![v4(&Ipv4Addr::from(i).to_string())])).collect();
    let delta = [SetDelta { name: "M", set: &map, gone: many.iter().collect(), new: vec![] }];
    assert!(encode(&delta, 1).unwrap_err().0.contains("more than 1024"));
}

/// The whole batch for one container that starts (a map element with a
/// jump) while another stops, pinned byte for byte: begin, one delete, one
/// add, end.
#[test]
fn a_batch_is_begin_deletions_additions_end_and_is_pinned() {
    let map = Set { key: types(&["ipv4_addr"]), verdicts: true, ..Set::default() };
    let (old, new) = (Elem(vec![v4("10.0.0.7")]), Elem(vec![v4("10.0.0.8")]));
    let delta =
        [SetDelta { name: "SEG-IN", set: &map, gone: vec![&old], new: vec![(&new, Some("goto SEG-IN-a"))] }];
    let batch = encode(&delta, 100).unwrap();
    assert_eq!(batch.begin_seq, 100);
    assert_eq!(
        batch.acked,
        BTreeMap::from([(101, "delete from set SEG-IN".to_string()), (102, "add to set SEG-IN".to_string())])
    );
    let hex: String = batch.bytes.iter().map(|b| format!("{b:02x}")).collect();
    let golden = concat!(
        // batch begin: len 20, type 0x10, flags REQUEST, seq 100, nfgenmsg(AF_UNSPEC, v0, res_id 10)
        "14000000",
        "1000",
        "0100",
        "64000000",
        "00000000",
        "0000000a",
        // DELSETELEM: len 60, type 0x0a0e, REQUEST|ACK, seq 101, nfgenmsg(inet)
        "3c000000",
        "0e0a",
        "0500",
        "65000000",
        "00000000",
        "01000000",
        "0800",
        "0100",
        "73656700", // table "seg\0"
        "0b00",
        "0200",
        "5345472d494e00",
        "00", // set "SEG-IN\0", padded
        // elements (nested) > element (nested) > key (nested) > value 10.0.0.7
        "1400",
        "0380",
        "1000",
        "0180",
        "0c00",
        "0180",
        "0800",
        "0100",
        "0a000007",
        // NEWSETELEM: len 92, REQUEST|ACK|CREATE, seq 102
        "5c000000",
        "0c0a",
        "0504",
        "66000000",
        "00000000",
        "01000000",
        "0800",
        "0100",
        "73656700",
        "0b00",
        "0200",
        "5345472d494e00",
        "00",
        "3400",
        "0380",
        "3000",
        "0180",
        "0c00",
        "0180",
        "0800",
        "0100",
        "0a000008",
        // data (nested) > verdict (nested) > code NFT_GOTO (-4, big endian), chain "SEG-IN-a\0", padded
        "2000",
        "0280",
        "1c00",
        "0280",
        "0800",
        "0100",
        "fffffffc",
        "0d00",
        "0200",
        "5345472d494e2d6100",
        "000000",
        // batch end: seq 103
        "14000000",
        "1100",
        "0100",
        "67000000",
        "00000000",
        "0000000a",
    );
    assert_eq!(hex, golden);
}

fn answer(seq: u32, errno: i32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&36u32.to_ne_bytes());
    out.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&(-errno).to_ne_bytes());
    // The request's header, echoed.
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out
}

#[test]
fn answers_are_matched_to_their_messages_and_an_error_about_the_batch_ends_the_wait() {
    let batch =
        Batch { bytes: vec![], acked: BTreeMap::from([(11, "a".into()), (12, "b".into())]), begin_seq: 10 };
    let (mut pending, mut errors) = (vec![11, 12], vec![]);
    let mut bytes = answer(11, 0);
    bytes.extend(answer(12, libc::ENOENT));
    read_answers(&bytes, &batch, &mut pending, &mut errors);
    assert!(pending.is_empty());
    assert_eq!(errors, [(12, libc::ENOENT)]);

    let (mut pending, mut errors) = (vec![11, 12], vec![]);
    read_answers(&answer(10, libc::ENOMEM), &batch, &mut pending, &mut errors);
    assert!(pending.is_empty(), "no other answer comes after an error about the batch");
    assert_eq!(errors, [(10, libc::ENOMEM)]);
}

/// A range of an interval map is its first address with the verdict and
/// the address after its last flagged as the end; a range that ends at the
/// last address has no end element.
#[test]
fn an_interval_is_a_start_and_an_end_element() {
    let nets = Set { key: types(&["ipv4_addr"]), verdicts: true, interval: true, ..Set::default() };
    let range = |a: &str, b: &str| Elem(vec![Part::Addrs(a.parse().unwrap(), b.parse().unwrap())]);
    let (lan, all_high) = (range("10.1.0.0", "10.1.255.255"), range("128.0.0.0", "255.255.255.255"));
    let delta = [SetDelta {
        name: "N",
        set: &nets,
        gone: vec![],
        new: vec![(&lan, Some("drop")), (&all_high, Some("return"))],
    }];
    let hex: String = encode(&delta, 1).unwrap().bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Element (nested) > key (nested) > value, then flags: the hex of one element.
    // A start element (32 bytes: key, then the verdict's data) or an end
    // element (24 bytes: key, then flags INTERVAL_END, big endian 1).
    let elem = |value: &str, end: bool| match end {
        true => format!("180001800c00018008000100{value}0800030000000001"),
        false => format!("200001800c00018008000100{value}10000280"),
    };
    assert!(hex.contains(&elem("0a010000", false)), "start 10.1.0.0 with its verdict: {hex}");
    assert!(hex.contains(&elem("0a020000", true)), "end: 10.2.0.0, no data: {hex}");
    assert!(hex.contains(&elem("80000000", false)), "start 128.0.0.0: {hex}");
    assert!(!hex.contains(&elem("00000000", true)), "255.255.255.255 + 1 does not exist: no end: {hex}");
    let bad = range("10.0.0.9", "10.0.0.1");
    let delta = [SetDelta { name: "N", set: &nets, gone: vec![&bad], new: vec![] }];
    assert!(encode(&delta, 1).is_err(), "a reversed range is refused");
}
