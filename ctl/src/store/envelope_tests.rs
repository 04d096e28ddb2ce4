use super::*;

fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

fn kek() -> Kek {
    Kek::from_secret(&Kek::random_bytes().unwrap()).unwrap()
}

fn value() -> SecretBytes {
    SecretBytes::from_slice(b"correct horse battery staple")
}

#[test]
fn roundtrip_with_a_fresh_data_key_per_seal() {
    let k = kek();
    let a = k.seal(&name("db"), 1, &value()).unwrap();
    let b = k.seal(&name("db"), 1, &value()).unwrap();
    assert!(a.starts_with(PREFIX));
    assert_eq!(a.len(), value().len() + OVERHEAD);
    // Fresh DEK and nonces each time: the wrapped keys and ciphertexts differ.
    let wrapped = PREFIX.len() + KEK_ID_LEN..HEADER_LEN;
    assert_ne!(a[wrapped.clone()], b[wrapped]);
    assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    assert!(k.open(&name("db"), 1, &a).unwrap().ct_eq(value().expose()));
    let empty = k.seal(&name("db"), 1, &SecretBytes::zeroed(0)).unwrap();
    assert!(k.open(&name("db"), 1, &empty).unwrap().is_empty());
}

#[test]
fn plaintext_and_kek_bytes_never_appear_in_the_envelope() {
    let raw = Kek::random_bytes().unwrap();
    let k = Kek::from_secret(&raw).unwrap();
    let sealed = k.seal(&name("db"), 7, &value()).unwrap();
    let has = |needle: &[u8]| sealed.windows(needle.len()).any(|w| w == needle);
    assert!(!has(&value().expose()[..8]));
    assert!(!has(&raw.expose()[..8]));
}

#[test]
fn any_flipped_byte_fails() {
    let k = kek();
    let sealed = k.seal(&name("db"), 1, &value()).unwrap();
    for i in PREFIX.len() + KEK_ID_LEN..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert_eq!(k.open(&name("db"), 1, &bad).unwrap_err(), EnvelopeError::Auth, "byte {i}");
    }
    let mut bad_id = sealed.clone();
    bad_id[PREFIX.len()] ^= 1;
    assert!(matches!(k.open(&name("db"), 1, &bad_id), Err(EnvelopeError::KekMismatch { .. })));
    let mut bad_prefix = sealed.clone();
    bad_prefix[0] ^= 1;
    assert_eq!(k.open(&name("db"), 1, &bad_prefix).unwrap_err(), EnvelopeError::NotEnvelope);
    assert_eq!(k.open(&name("db"), 1, &sealed[..40]).unwrap_err(), EnvelopeError::TooShort(40));
}

#[test]
fn swapped_records_versions_or_data_keys_fail() {
    let k = kek();
    let db2 = k.seal(&name("db"), 2, &value()).unwrap();
    let api2 = k.seal(&name("api"), 2, &SecretBytes::from_slice(b"other")).unwrap();
    assert_eq!(k.open(&name("api"), 2, &db2).unwrap_err(), EnvelopeError::Auth);
    assert_eq!(k.open(&name("db"), 1, &db2).unwrap_err(), EnvelopeError::Auth);
    assert_eq!(k.open(&name("db"), 3, &db2).unwrap_err(), EnvelopeError::Auth);
    // The wrapped DEK of one envelope grafted onto another's body.
    let mut graft = api2[..HEADER_LEN].to_vec();
    graft.extend_from_slice(&db2[HEADER_LEN..]);
    assert_eq!(k.open(&name("db"), 2, &graft).unwrap_err(), EnvelopeError::Auth);
    assert_eq!(k.open(&name("api"), 2, &graft).unwrap_err(), EnvelopeError::Auth);
}

#[test]
fn another_kek_is_told_apart_and_refused() {
    let sealed = kek().seal(&name("db"), 1, &value()).unwrap();
    let other = kek();
    let err = other.open(&name("db"), 1, &sealed).unwrap_err();
    assert!(matches!(&err, EnvelopeError::KekMismatch { expected, .. } if *expected == other.id()), "{err}");
    assert!(err.to_string().contains("another cluster's key"), "{err}");
}

#[test]
fn debug_and_errors_do_not_show_keys() {
    let raw = Kek::random_bytes().unwrap();
    let k = Kek::from_secret(&raw).unwrap();
    let hex_key = hex(raw.expose());
    let shown = format!("{k:?}");
    assert!(shown.contains(&k.id()) && !shown.contains(&hex_key[..16]), "{shown}");
    assert!(!hex_key.contains(&k.id()));
    assert_eq!(k.id().len(), 16);
    assert_eq!(Kek::from_secret(&SecretBytes::zeroed(16)).unwrap_err(), EnvelopeError::BadKeyLength(16));
}
