//! Showing an RPC URL without what it may hide: hosted endpoints often carry an API key in the
//! path, query or user info, and HTTP errors quote the whole URL.

/// The RPC URL as it may be shown: scheme, host and port only, since path, query and user info often
/// carry an API key.
pub fn display_url(rpc_url: &str) -> String {
    match url::Url::parse(rpc_url) {
        Ok(url) => {
            let host = url.host_str().unwrap_or_default();
            match url.port() {
                Some(port) => format!("{}://{host}:{port}", url.scheme()),
                None => format!("{}://{host}", url.scheme()),
            }
        }
        Err(_) => "<unparsable RPC URL>".to_owned(),
    }
}

/// `text` with every spelling of `rpc_url` (as given, as normalised by a URL parser, and its
/// secret-bearing parts alone) replaced by [`display_url`].
pub fn redact(text: &str, rpc_url: &str) -> String {
    let shown = display_url(rpc_url);
    let mut spellings = vec![rpc_url.to_owned(), rpc_url.trim_end_matches('/').to_owned()];
    if let Ok(url) = url::Url::parse(rpc_url) {
        spellings.push(url.as_str().to_owned());
        let tail = &url[url::Position::BeforePath..];
        if tail.len() > 1 {
            spellings.push(tail.to_owned());
        }
        if let Some(password) = url.password() {
            spellings.push(password.to_owned());
        }
        if !url.username().is_empty() {
            spellings.push(url.username().to_owned());
        }
    }
    // Longest first, so a full URL is replaced before its parts.
    spellings.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for spelling in spellings.iter().filter(|s| !s.is_empty()) {
        if spelling != &shown {
            out = out.replace(spelling.as_str(), &shown);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_path_query_or_credentials() {
        assert_eq!(
            display_url("https://user:pw@eth.example.com:8443/v3/key?token=x"),
            "https://eth.example.com:8443"
        );
        assert_eq!(
            display_url("http://127.0.0.1:8545"),
            "http://127.0.0.1:8545"
        );
        assert_eq!(display_url("not a url"), "<unparsable RPC URL>");
    }

    #[test]
    fn redaction_removes_every_spelling_of_the_url() {
        let url = "https://user:pw@eth.example.com/v3/sekrit";
        let text =
            format!("error sending request for url ({url}/): also {url} and /v3/sekrit and pw");
        let redacted = redact(&text, url);
        assert!(!redacted.contains("sekrit"), "{redacted}");
        assert!(!redacted.contains("pw"), "{redacted}");
        assert!(redacted.contains("https://eth.example.com"), "{redacted}");
    }
}
