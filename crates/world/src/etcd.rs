use std::time::Duration;

use crate::{
    Binaries, Result,
    layout::Layout,
    ports,
    process::{Process, ProcessSpec, Supervisor},
};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The world's single etcd member. Each apiserver keeps its data under its own prefix.
pub(crate) struct Etcd {
    pub(crate) url: String,
    process: Process,
}

impl Etcd {
    pub(crate) async fn start(
        binaries: &Binaries,
        layout: &Layout,
        supervisor: &Supervisor,
    ) -> Result<Self> {
        let client_port = ports::free_port()?;
        let peer_port = ports::free_port()?;
        let url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let args = vec![
            "--name=world".to_owned(),
            format!("--data-dir={}", layout.etcd_data.display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=world={peer_url}"),
            // A test world: losing the data on a crash is fine, waiting for fsync is not.
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        let process = Process::new(ProcessSpec {
            component: "etcd".into(),
            program: binaries.etcd.clone(),
            args,
            log: layout.log("etcd"),
        });
        ports::ensure_free("etcd", client_port)?;
        process.start(supervisor)?;
        let etcd = Self { url, process };
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    pub(crate) fn stop(&self) {
        self.process.stop();
    }

    async fn wait_ready(&self) -> Result<()> {
        let client = kube::Client::try_from(kube::Config::new(
            self.url.parse().expect("etcd URL is a valid URI"),
        ))
        .map_err(|source| crate::Error::Kube {
            context: "cannot build an HTTP client for etcd".into(),
            source,
        })?;
        self.process
            .wait_ready(READY_TIMEOUT, || {
                let client = client.clone();
                async move {
                    let request = http::Request::get("/health").body(Vec::new());
                    match request {
                        Ok(request) => client
                            .request_text(request)
                            .await
                            .is_ok_and(|body| body.contains(r#""health":"true""#)),
                        Err(_) => false,
                    }
                }
            })
            .await
    }
}
