use std::{io::Read, net::Ipv4Addr};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::{Result, error::IoContext};

/// The world's certificate authority. Every server in a world (apiservers, and the webhooks the
/// simulators serve) presents a certificate from this CA for 127.0.0.1, so clients trust one
/// bundle.
pub(crate) struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A serving certificate and its key, both PEM.
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A ServiceAccount token signing key pair, both PEM.
pub(crate) struct SigningKey {
    pub(crate) public_pem: String,
    pub(crate) private_pem: String,
}

impl Pki {
    pub(crate) fn new() -> Result<Self> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "gleaner-world-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let ca = params.self_signed(&key)?;
        Ok(Self {
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A certificate for a server on 127.0.0.1 (IP SAN) and `localhost`.
    pub(crate) fn serving_cert(&self, common_name: &str) -> Result<ServingCert> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl SigningKey {
    pub(crate) fn generate() -> Result<Self> {
        let key = KeyPair::generate()?;
        Ok(Self {
            public_pem: key.public_key_pem(),
            private_pem: key.serialize_pem(),
        })
    }
}

/// A bearer token for the static token file: 32 hex characters from the kernel's CSPRNG.
pub(crate) fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .context(|| "cannot read /dev/urandom".into())?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}
