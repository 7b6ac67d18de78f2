//! Bus URLs: `mortar://HOST:PORT`.

use crate::error::ClientError;

/// A parsed `mortar://HOST:PORT` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusUrl {
    /// `HOST:PORT`, as given to the TCP connector.
    pub authority: String,
}

impl BusUrl {
    /// Parses a bus URL, naming what is wrong with a bad one.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("mortar://")
            .ok_or_else(|| invalid("it must start with mortar://"))?;
        let authority = rest.trim_end_matches('/');
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| invalid("it must name a port: mortar://HOST:PORT"))?;
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(invalid("the port must be a number from 1 to 65535")),
        }
        if authority.contains('/') {
            return Err(invalid("a bus URL has no path"));
        }
        Ok(BusUrl {
            authority: authority.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_and_port() {
        assert_eq!(
            BusUrl::parse("mortar://127.0.0.1:4222").unwrap().authority,
            "127.0.0.1:4222"
        );
    }

    #[test]
    fn bad_urls_name_the_problem() {
        for (url, why) in [
            ("http://x:1", "mortar://"),
            ("mortar://x", "port"),
            ("mortar://x:0", "port"),
            ("mortar://:80", "host"),
        ] {
            let e = BusUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
