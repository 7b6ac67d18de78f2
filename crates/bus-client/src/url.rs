//! Bus URLs: `mortar://HOST:PORT`.

use crate::error::ClientError;

/// A parsed `mortar://HOST:PORT` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusUrl {
    /// Which backend the URL names.
    pub scheme: Scheme,
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
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("mortar://") {
            (Scheme::Mortar, rest)
        } else if let Some(rest) = url.strip_prefix("nats://") {
            (Scheme::Nats, rest)
        } else {
            return Err(invalid(
                "it must start with mortar:// (the embedded broker) or nats:// (NATS JetStream)",
            ));
        };
        let rest = rest.trim_end_matches('/');
        // Credentials (nats://user:password@host:port) are the NATS client's business.
        let authority = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
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
            scheme,
            authority: authority.to_owned(),
        })
    }
}

/// The backend a bus URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `mortar://`: the embedded broker's protocol.
    Mortar,
    /// `nats://`: NATS JetStream.
    Nats,
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
    fn nats_urls_name_the_other_backend_and_may_carry_credentials() {
        let url = BusUrl::parse("nats://app:pw@127.0.0.1:4222").unwrap();
        assert_eq!(url.scheme, Scheme::Nats);
        assert_eq!(url.authority, "127.0.0.1:4222");
    }

    #[test]
    fn bad_urls_name_the_problem() {
        for (url, why) in [
            ("http://x:1", "mortar://"),
            ("http://x:1", "nats://"),
            ("mortar://x", "port"),
            ("mortar://x:0", "port"),
            ("mortar://:80", "host"),
        ] {
            let e = BusUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
