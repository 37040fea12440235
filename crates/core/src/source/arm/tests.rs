//! Unit tests of `arm`.

use super::*;

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
