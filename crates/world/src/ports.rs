use std::net::{Ipv4Addr, TcpListener};

use crate::{Error, Result};

/// A port the kernel just handed out on 127.0.0.1. The listener is closed before the port is
/// used, so another process could take it in between; [`ensure_free`] turns that race into a
/// clear error instead of a confusing child-process failure.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| Error::Io {
        context: "cannot bind a free port on 127.0.0.1".into(),
        source,
    })?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|source| Error::Io {
            context: "cannot read the bound port".into(),
            source,
        })
}

pub(crate) fn ensure_free(component: &str, port: u16) -> Result<()> {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Err(Error::PortInUse {
            component: component.to_owned(),
            port,
        }),
        Err(source) => Err(Error::Io {
            context: format!("cannot check 127.0.0.1:{port} for {component}"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_held_by_another_listener_is_reported_as_in_use() {
        let holder = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = holder.local_addr().unwrap().port();
        let error = ensure_free("kube-apiserver rancher", port).unwrap_err();
        assert!(matches!(error, Error::PortInUse { port: p, .. } if p == port));
        assert_eq!(
            error.to_string(),
            format!(
                "kube-apiserver rancher cannot listen on 127.0.0.1:{port}: the port is in use by another process"
            )
        );
    }

    #[test]
    fn a_free_port_can_be_bound_again() {
        let port = free_port().unwrap();
        ensure_free("etcd", port).unwrap();
    }
}
