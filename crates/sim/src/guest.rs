//! A guest cluster's own apiserver, and the credential Rancher holds for it: as real Rancher's
//! `<cluster>-kubeconfig`, a kubeconfig with a bearer token, here the token of a ServiceAccount
//! in `kube-system` bound to `cluster-admin`. Revoking the credential deletes that account, so
//! its token is refused from then on (401).

use gleaner_world::{World, render_kubeconfig};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRoleBinding, RoleRef, Subject},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use crate::{Error, Result, csi::api::delete, error::KubeContext};

/// Where the credential's ServiceAccounts live.
pub const CREDENTIAL_NAMESPACE: &str = "kube-system";
/// Each credential's ServiceAccount (and ClusterRoleBinding) is `<prefix>-<generation>`.
const ACCOUNT_PREFIX: &str = "rancher-kubeconfig";
/// How long a minted token lives: a day, longer than any test or demo.
const TOKEN_SECONDS: i64 = 24 * 3600;

/// One guest apiserver of the world: its world cluster name, an admin client to mint and revoke
/// credentials with, and where it listens.
#[derive(Clone)]
pub struct GuestApiserver {
    /// The world cluster name (for `World::stop_apiserver` and the like).
    pub cluster: String,
    admin: Client,
    server: String,
    ca_pem: String,
}

/// A credential for a guest apiserver: the ServiceAccount whose token it carries, and the
/// kubeconfig Rancher writes into `<cluster>-kubeconfig`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestCredential {
    pub account: String,
    pub kubeconfig: String,
}

impl GuestApiserver {
    /// Starts a fresh guest apiserver in `world`.
    pub async fn start(world: &World) -> Result<Self> {
        let cluster = world.start_guest().await?;
        Ok(Self {
            admin: world.client(&cluster).await?,
            server: world.server(&cluster)?,
            ca_pem: world.ca_pem().to_owned(),
            cluster,
        })
    }

    /// A client acting as the guest's admin.
    pub fn admin(&self) -> &Client {
        &self.admin
    }

    /// A new credential, number `generation`: its ServiceAccount, bound to `cluster-admin`, and
    /// a token minted for it through the TokenRequest API.
    pub async fn mint_credential(&self, generation: u32) -> Result<GuestCredential> {
        let account = format!("{ACCOUNT_PREFIX}-{generation}");
        self.create_account(&account).await?;
        self.bind_cluster_admin(&account).await?;
        let token = self.request_token(&account).await?;
        Ok(GuestCredential {
            kubeconfig: render_kubeconfig(&self.cluster, &self.server, &self.ca_pem, &token),
            account,
        })
    }

    /// Deletes the credential's ServiceAccount and binding: its token is refused from now on.
    pub async fn revoke(&self, credential: &GuestCredential) -> Result<()> {
        let account = &credential.account;
        delete(&self.accounts(), account, "ServiceAccount").await?;
        let bindings: Api<ClusterRoleBinding> = Api::all(self.admin.clone());
        delete(&bindings, account, "ClusterRoleBinding").await
    }

    fn accounts(&self) -> Api<ServiceAccount> {
        Api::namespaced(self.admin.clone(), CREDENTIAL_NAMESPACE)
    }

    async fn create_account(&self, account: &str) -> Result<()> {
        let object = ServiceAccount {
            metadata: named(account),
            ..ServiceAccount::default()
        };
        self.accounts()
            .create(&PostParams::default(), &object)
            .await
            .context(|| format!("cannot create ServiceAccount {CREDENTIAL_NAMESPACE}/{account}"))?;
        Ok(())
    }

    async fn bind_cluster_admin(&self, account: &str) -> Result<()> {
        let binding = ClusterRoleBinding {
            metadata: named(account),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_owned(),
                kind: "ClusterRole".to_owned(),
                name: "cluster-admin".to_owned(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name: account.to_owned(),
                namespace: Some(CREDENTIAL_NAMESPACE.to_owned()),
                ..Subject::default()
            }]),
        };
        Api::<ClusterRoleBinding>::all(self.admin.clone())
            .create(&PostParams::default(), &binding)
            .await
            .context(|| format!("cannot bind {account} to cluster-admin"))?;
        Ok(())
    }

    async fn request_token(&self, account: &str) -> Result<String> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(TOKEN_SECONDS),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let status = self
            .accounts()
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .context(|| format!("cannot mint a token for {CREDENTIAL_NAMESPACE}/{account}"))?
            .status;
        status.map(|status| status.token).ok_or_else(|| {
            Error::Invalid(format!(
                "the TokenRequest for {CREDENTIAL_NAMESPACE}/{account} came back without a token"
            ))
        })
    }
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}
