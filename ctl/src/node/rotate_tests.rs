use super::*;

#[test]
fn grace_defaults_to_ten_minutes_and_is_bounded() {
    assert_eq!(grace_policy(None).unwrap(), Duration::from_millis(DEFAULT_GRACE_MS));
    assert_eq!(grace_policy(Some(0)).unwrap(), Duration::ZERO);
    assert_eq!(grace_policy(Some(MAX_GRACE_MS)).unwrap(), Duration::from_millis(MAX_GRACE_MS));
    assert_eq!(grace_policy(Some(MAX_GRACE_MS + 1)).unwrap_err().code, "bad_grace");
}
