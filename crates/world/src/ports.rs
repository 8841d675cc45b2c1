use std::{
    collections::HashSet,
    net::{Ipv4Addr, TcpListener},
    sync::{LazyLock, Mutex},
};

use crate::{Error, Result};

/// How many ports the kernel may hand out that this process already gave a component before
/// [`free_port`] gives up.
const PORT_ATTEMPTS: usize = 64;

/// Every port [`free_port`] handed out in this process. The kernel may hand a closed port out
/// again, and two components starting at once (guest apiservers started in parallel) must not
/// both get it.
static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Mutex::default);

/// A port the kernel just handed out on 127.0.0.1, never one this process handed out before. The
/// listener is closed before the port is used, so another process could take it in between;
/// [`ensure_free`] turns that race into a clear error instead of a confusing child-process
/// failure.
pub(crate) fn free_port() -> Result<u16> {
    for _ in 0..PORT_ATTEMPTS {
        let port = kernel_port()?;
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(port)
        {
            return Ok(port);
        }
    }
    Err(Error::Io {
        context: format!(
            "the kernel handed out {PORT_ATTEMPTS} ports in a row that this process already uses"
        ),
        source: std::io::ErrorKind::AddrInUse.into(),
    })
}

fn kernel_port() -> Result<u16> {
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

    #[test]
    fn no_port_is_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let distinct: HashSet<&u16> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
