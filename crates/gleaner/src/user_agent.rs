//! gleaner names itself on every request it sends (`User-Agent: gleaner/<version>`), to
//! Rancher's apiserver and to every Harvester's and guest's: an apiserver's audit log then tells
//! its requests from every other client's (kube's client sends no User-Agent of its own).

use http::{HeaderValue, header::USER_AGENT};

/// What gleaner calls itself.
pub const NAME: &str = concat!("gleaner/", env!("CARGO_PKG_VERSION"));

/// `config` with gleaner's User-Agent on every request.
pub fn identified(mut config: kube::Config) -> kube::Config {
    config.headers.retain(|(name, _)| name != USER_AGENT);
    config
        .headers
        .push((USER_AGENT, HeaderValue::from_static(NAME)));
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_says_it_is_gleaner_once() {
        let mut config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        config
            .headers
            .push((USER_AGENT, HeaderValue::from_static("someone-else")));
        let config = identified(config);
        let agents: Vec<_> = config
            .headers
            .iter()
            .filter(|(name, _)| name == USER_AGENT)
            .map(|(_, value)| value.to_str().unwrap())
            .collect();
        assert_eq!(agents, [NAME]);
        assert!(NAME.starts_with("gleaner/"));
    }
}
