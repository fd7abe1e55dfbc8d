//! Certificates and keys for a local cluster: one CA, the API server's and PostgreSQL's
//! serving certificates, an admin client certificate in `system:masters`, and the
//! service-account signing key. Generated once per cluster start; never leave the state directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Paths of the generated files.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
    pub postgres_cert: PathBuf,
    pub postgres_key: PathBuf,
    /// The real node's: kubelet's serving certificate and its client identity
    /// (`system:node:<name>`, for the Node authorizer), kube-proxy's and kube-router's.
    pub kubelet_cert: PathBuf,
    pub kubelet_key: PathBuf,
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
    pub kube_proxy_cert: PathBuf,
    pub kube_proxy_key: PathBuf,
    pub kube_router_cert: PathBuf,
    pub kube_router_key: PathBuf,
}

/// The user kube-router authenticates as (bound to its ClusterRole by the node's start).
pub const KUBE_ROUTER_USER: &str = "smartregion-e2e-kube-router";

impl Pki {
    pub fn at(dir: &Path) -> Self {
        Pki {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            apiserver_cert: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_account_key: dir.join("service-account.key"),
            service_account_public_key: dir.join("service-account.pub"),
            postgres_cert: dir.join("postgres.crt"),
            postgres_key: dir.join("postgres.key"),
            kubelet_cert: dir.join("kubelet.crt"),
            kubelet_key: dir.join("kubelet.key"),
            kubelet_client_cert: dir.join("kubelet-client.crt"),
            kubelet_client_key: dir.join("kubelet-client.key"),
            kube_proxy_cert: dir.join("kube-proxy.crt"),
            kube_proxy_key: dir.join("kube-proxy.key"),
            kube_router_cert: dir.join("kube-router.crt"),
            kube_router_key: dir.join("kube-router.key"),
        }
    }

    /// Creates every certificate and key under `dir`, replacing older ones.
    pub fn generate(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let pki = Pki::at(dir);

        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name = name("smartregion-e2e-ca", None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, &ca_key);
        write(&pki.ca_cert, &ca_cert.pem())?;
        write(&pki.ca_key, &ca_key.serialize_pem())?;

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
        ])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse()?));
        serving
            .subject_alt_names
            .push(SanType::IpAddress("10.96.0.1".parse()?));
        serving
            .subject_alt_names
            .push(SanType::IpAddress(crate::node::HOST_ADDRESS.into()));
        serving.distinguished_name = name("kube-apiserver", None);
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;
        write(&pki.apiserver_cert, &serving_cert.pem())?;
        write(&pki.apiserver_key, &serving_key.serialize_pem())?;

        // PostgreSQL's, so the operator's sslmode=verify-full is tested for real.
        let postgres_key = KeyPair::generate()?;
        let mut postgres = CertificateParams::new(vec!["localhost".to_string()])?;
        postgres
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse()?));
        postgres
            .subject_alt_names
            .push(SanType::IpAddress(crate::node::HOST_ADDRESS.into()));
        postgres.distinguished_name = name("smartregion-e2e-postgres", None);
        postgres.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let postgres_cert = postgres.signed_by(&postgres_key, &issuer)?;
        write(&pki.postgres_cert, &postgres_cert.pem())?;
        write(&pki.postgres_key, &postgres_key.serialize_pem())?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin.distinguished_name = name("smartregion-e2e-admin", Some("system:masters"));
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;
        write(&pki.admin_cert, &admin_cert.pem())?;
        write(&pki.admin_key, &admin_key.serialize_pem())?;

        let kubelet_key = KeyPair::generate()?;
        let mut kubelet = CertificateParams::new(vec![crate::node::NODE_NAME.to_string()])?;
        kubelet
            .subject_alt_names
            .push(SanType::IpAddress(crate::node::NODE_ADDRESS.into()));
        kubelet.distinguished_name = name(crate::node::NODE_NAME, None);
        kubelet.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let kubelet_cert = kubelet.signed_by(&kubelet_key, &issuer)?;
        write(&pki.kubelet_cert, &kubelet_cert.pem())?;
        write(&pki.kubelet_key, &kubelet_key.serialize_pem())?;
        for (common_name, organization, cert, key) in [
            (
                format!("system:node:{}", crate::node::NODE_NAME),
                Some("system:nodes"),
                &pki.kubelet_client_cert,
                &pki.kubelet_client_key,
            ),
            (
                "system:kube-proxy".to_string(),
                None,
                &pki.kube_proxy_cert,
                &pki.kube_proxy_key,
            ),
            (
                KUBE_ROUTER_USER.to_string(),
                None,
                &pki.kube_router_cert,
                &pki.kube_router_key,
            ),
        ] {
            let client_key = KeyPair::generate()?;
            let mut client = CertificateParams::new(Vec::<String>::new())?;
            client.distinguished_name = name(&common_name, organization);
            client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let client_cert = client.signed_by(&client_key, &issuer)?;
            write(cert, &client_cert.pem())?;
            write(key, &client_key.serialize_pem())?;
        }

        let service_account_key = KeyPair::generate()?;
        write(
            &pki.service_account_key,
            &service_account_key.serialize_pem(),
        )?;
        write(
            &pki.service_account_public_key,
            &service_account_key.public_key_pem(),
        )?;
        Ok(pki)
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn write(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
