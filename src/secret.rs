//! Secrets in `Debug` output and logs: only whether a secret is set, and
//! URLs with their password masked.
//!
//! Its own module because both the configuration tree and the ARI client's
//! config print secrets' presence, and neither should depend on the other.

/// How a secret shows in `Debug` output and logs: only whether it is set.
pub fn secret_state(secret: &str) -> &'static str {
    if secret.is_empty() { "not set" } else { "set" }
}

/// A URL with its password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_show_only_whether_they_are_set() {
        assert_eq!(secret_state(""), "not set");
        assert_eq!(secret_state("hunter2"), "set");
        assert_eq!(
            redact_url("redis://user:hunter2@h:6379/0"),
            "redis://user:***@h:6379/0"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}
