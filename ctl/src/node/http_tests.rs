use super::*;

#[test]
fn routes_parse() {
    assert_eq!(route("/v1/status"), Route::Status);
    assert_eq!(route("/v1/whoami"), Route::WhoAmI);
    assert_eq!(route("/v1/secrets"), Route::Secrets);
    assert_eq!(route("/v1/secrets/db"), Route::Secret("db"));
    assert_eq!(route("/v1/secrets/db/ttl"), Route::SecretTtl("db"));
    assert_eq!(route("/v1/secrets/db/grants"), Route::SecretGrants("db"));
    assert_eq!(route("/v1/secrets/db/rotate"), Route::SecretRotate("db"));
    assert_eq!(route("/v1/secrets/db/hooks"), Route::SecretHooks("db"));
    assert_eq!(route("/v1/secrets/db/status"), Route::SecretStatus("db"));
    assert_eq!(
        (route("/v1/watch"), route("/v1/ack"), route("/v1/notify")),
        (Route::Watch, Route::Ack, Route::Notify)
    );
    for other in ["/", "/v1", "/v1/", "/v2/status", "/v1/secrets/a/b", "/v1/secrets/db/x", "/v1/status/"] {
        assert_eq!(route(other), Route::Unknown, "{other}");
    }
}

#[test]
fn ttl_query_accepts_only_ttl_ms() {
    assert_eq!(ttl_query(None), Ok(None));
    assert_eq!(ttl_query(Some("ttl_ms=2000")), Ok(Some(2000)));
    assert_eq!(ttl_query(Some("ttl_ms=x")).unwrap_err().code, "bad_ttl");
    assert_eq!(ttl_query(Some("ttl=5")).unwrap_err().code, "bad_request");
    let [a, b] = numbers_query(Some("grace_ms=5&ttl_ms=2000"), ["ttl_ms", "grace_ms"]).unwrap();
    assert_eq!((a, b), (Some(2000), Some(5)));
    assert_eq!(text_query(Some("secrets=a,b"), "secrets"), Ok(Some("a,b")));
    assert!(text_query(Some("x=1"), "secrets").is_err());
}

#[tokio::test]
async fn secret_body_is_read_exactly() {
    let v = read_secret(Full::new(Bytes::from_static(b"hunter2")), Some(7)).await.unwrap();
    assert_eq!(v.expose(), b"hunter2");
    let short = read_secret(Full::new(Bytes::from_static(b"abc")), Some(7)).await.unwrap_err();
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    let long = read_secret(Full::new(Bytes::from_static(b"abcdefgh")), Some(7)).await.unwrap_err();
    assert_eq!(long.status, StatusCode::BAD_REQUEST);
    let none = read_secret(Full::new(Bytes::new()), None).await.unwrap_err();
    assert_eq!(none.status, StatusCode::LENGTH_REQUIRED);
}

#[tokio::test]
async fn a_value_in_many_chunks_is_assembled_in_order() {
    use http_body_util::StreamBody;
    let value: Vec<u8> = (0..64 * 1024).map(|_| fastrand::u8(..)).collect();
    let frames: Vec<Result<_, std::convert::Infallible>> = value
        .chunks(8 * 1024 - 37)
        .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let v = read_secret(body, Some(value.len() as u64)).await.unwrap();
    assert!(v.ct_eq(&value));
}

#[test]
fn a_shared_chunk_is_left_to_its_other_holder() {
    let held = Bytes::from(vec![7u8; 100]);
    wipe_if_unique(held.clone());
    assert_eq!(&held[..], &[7u8; 100][..], "wiped a buffer someone else still reads");
    let mut shared = bytes::BytesMut::from(&[9u8; 64][..]); // as hyper splits its read buffer
    wipe_if_unique(shared.split_to(32).freeze());
    assert_eq!(&shared[..], &[9u8; 32][..]);
}

#[tokio::test]
async fn oversized_values_are_refused_from_the_header() {
    let len = 600 * 1024;
    let err = read_secret(Full::new(Bytes::new()), Some(len)).await.unwrap_err();
    assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err.message, "value is 614400 bytes; limit is 524288");
}

#[tokio::test]
async fn json_bodies_are_bounded() {
    let big = Bytes::from(vec![b' '; MAX_JSON_BODY + 1]);
    let err = read_json::<serde_json::Value, _>(Full::new(big), None).await.unwrap_err();
    assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    let err = read_json::<serde_json::Value, _>(Full::new(Bytes::new()), Some(1 << 20)).await.unwrap_err();
    assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn value_responses_carry_version_and_lease() {
    let resp = secret_value(SecretBytes::from_slice(b"x"), 4, 2000);
    assert_eq!(resp.headers()[HDR_VERSION], "4");
    assert_eq!(resp.headers()[HDR_LEASE_MS], "2000");
    assert_eq!(resp.headers()[CONTENT_TYPE], "application/octet-stream");
}
