//! Unit tests of `arm`.

use super::tokens::{renew_at, TOKEN_LIFETIME_CEILING};
use super::*;
use std::time::Instant;

#[test]
fn next_links_are_followed_on_the_same_origin_only() {
    let base: http::Uri = "https://management.azure.com/subscriptions/s"
        .parse()
        .unwrap();
    for same in [
        "https://management.azure.com/next?page=2",
        "https://MANAGEMENT.azure.com:443/next",
    ] {
        assert!(same_origin(&base, &same.parse().unwrap()), "{same}");
    }
    for other in [
        "https://evil.example/next",
        "http://management.azure.com/next",
        "https://management.azure.com:8443/next",
        "https://management.azure.com.evil.example/next",
    ] {
        assert!(!same_origin(&base, &other.parse().unwrap()), "{other}");
    }
}

#[test]
fn any_token_lifetime_gives_a_renewal_time_within_bounds() {
    let now = Instant::now();
    for seconds in [0, 1, 3600, u64::MAX] {
        let at = renew_at(now, Duration::from_secs(seconds));
        assert!(at > now, "{seconds}: renewed after it was fetched");
        assert!(
            at <= now + TOKEN_LIFETIME_CEILING,
            "{seconds}: renewed within a day"
        );
    }
    assert_eq!(
        renew_at(now, Duration::from_secs(3600)),
        now + Duration::from_secs(3300)
    );
}
