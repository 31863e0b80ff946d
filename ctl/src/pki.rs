//! The cluster CA and certificates that carry a principal's role and id.
//!
//! Every certificate names its principal in a URI SAN `urn:permafrost:<role>:<id>`
//! (read back by `permafrost_proto::auth`), and a DNS SAN `<id>.<role>.permafrost`
//! that clients verify when they connect to a server.

use std::net::IpAddr;
use std::path::Path;

use permafrost_core::Role;
use permafrost_proto::auth::PRINCIPAL_URI_PREFIX;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::files::{read_text, write_private, write_public};
use crate::CtlError;

/// File names inside a CA directory.
pub const CA_CERT: &str = "ca.pem";
/// CA private key file name.
pub const CA_KEY: &str = "ca.key";

/// The DNS name a server of `role` with `id` presents and clients verify.
pub fn server_name(role: Role, id: &str) -> String {
    format!("{id}.{role}.permafrost")
}

/// A CA or CSR file that cannot be used (the operator's to replace).
fn bad_file(what: &str, e: rcgen::Error) -> CtlError {
    CtlError::InvalidFile(format!("certificate authority: {what}: {e}"))
}

/// A step that only fails on a bug (ours or rcgen's): parameters built here, fresh keys.
fn bug(what: &str, e: rcgen::Error) -> CtlError {
    CtlError::Bug(format!("certificate authority: {what}: {e}"))
}

/// Creates a new cluster CA in `dir` (refuses to overwrite one).
pub fn init_ca(dir: &Path, name: &str) -> Result<(), CtlError> {
    if dir.join(CA_KEY).exists() {
        return Err(CtlError::InvalidInput(format!(
            "a CA already exists in {}; refusing to overwrite it",
            dir.display()
        )));
    }
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| bug("CA params", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Permafrost");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
    let key = KeyPair::generate().map_err(|e| bug("CA key", e))?;
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    let ca = CertifiedIssuer::self_signed(params, key).map_err(|e| bug("CA certificate", e))?;
    std::fs::create_dir_all(dir).map_err(|e| CtlError::io(dir, e))?;
    write_private(&dir.join(CA_KEY), key_pem.as_bytes())?;
    write_public(&dir.join(CA_CERT), ca.pem().as_bytes())?;
    Ok(())
}

/// What to put in a certificate besides role and id.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// Additional DNS names.
    pub dns: Vec<String>,
    /// Additional IP addresses.
    pub ips: Vec<IpAddr>,
    /// Validity in days.
    pub days: Option<i64>,
}

/// A certificate issued by the CA, with its key when the CA generated it.
pub struct Issued {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM (absent when issued for a CSR).
    pub key_pem: Option<zeroize::Zeroizing<String>>,
}

/// Issues a certificate for `role`/`id`. With `csr_pem`, only the CSR's public
/// key is used: role, id and names always come from the CA operator, never from the requester.
pub fn issue(
    ca_dir: &Path,
    role: Role,
    id: &str,
    extra: &Extra,
    csr_pem: Option<&str>,
) -> Result<Issued, CtlError> {
    permafrost_core::NodeId::new(id).map_err(|e| CtlError::InvalidInput(format!("--id: {e}")))?;
    let ca_cert = read_text(&ca_dir.join(CA_CERT))?;
    let ca_key = zeroize::Zeroizing::new(read_text(&ca_dir.join(CA_KEY))?);
    let ca_key = KeyPair::from_pem(&ca_key).map_err(|e| bad_file("CA key", e))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_cert, ca_key).map_err(|e| bad_file("CA certificate", e))?;

    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| bug("params", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{role}:{id}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Permafrost");
    let mut sans = vec![
        SanType::URI(
            format!("{PRINCIPAL_URI_PREFIX}{role}:{id}")
                .try_into()
                .map_err(|e| bug("URI SAN", e))?,
        ),
        SanType::DnsName(
            server_name(role, id)
                .try_into()
                .map_err(|e| bug("DNS SAN", e))?,
        ),
    ];
    for dns in &extra.dns {
        sans.push(SanType::DnsName(dns.clone().try_into().map_err(|_| {
            CtlError::InvalidInput(format!("--dns {dns:?} is not a DNS name"))
        })?));
    }
    sans.extend(extra.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after =
        time::OffsetDateTime::now_utc() + time::Duration::days(extra.days.unwrap_or(365));

    match csr_pem {
        Some(csr) => {
            let csr =
                CertificateSigningRequestParams::from_pem(csr).map_err(|e| bad_file("CSR", e))?;
            let cert = params
                .signed_by(&csr.public_key, &issuer)
                .map_err(|e| bug("certificate", e))?;
            Ok(Issued {
                cert_pem: cert.pem(),
                key_pem: None,
            })
        }
        None => {
            let key = KeyPair::generate().map_err(|e| bug("key", e))?;
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(|e| bug("certificate", e))?;
            Ok(Issued {
                cert_pem: cert.pem(),
                key_pem: Some(zeroize::Zeroizing::new(key.serialize_pem())),
            })
        }
    }
}

/// Issues and writes `<out>/<id>.pem` (+ `<id>.key` when generated here).
pub fn issue_to_dir(
    ca_dir: &Path,
    role: Role,
    id: &str,
    extra: &Extra,
    csr_pem: Option<&str>,
    out_dir: &Path,
) -> Result<(), CtlError> {
    let issued = issue(ca_dir, role, id, extra, csr_pem)?;
    std::fs::create_dir_all(out_dir).map_err(|e| CtlError::io(out_dir, e))?;
    write_public(
        &out_dir.join(format!("{id}.pem")),
        issued.cert_pem.as_bytes(),
    )?;
    if let Some(key) = issued.key_pem {
        write_private(&out_dir.join(format!("{id}.key")), key.as_bytes())?;
    }
    Ok(())
}

/// A fresh TLS key and a CSR for it (the CA ignores the CSR's names).
pub fn new_key_and_csr(id: &str) -> Result<(zeroize::Zeroizing<String>, String), CtlError> {
    let key = KeyPair::generate().map_err(|e| bug("key", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| bug("params", e))?;
    params.distinguished_name.push(DnType::CommonName, id);
    let csr = params.serialize_request(&key).map_err(|e| bug("CSR", e))?;
    Ok((
        zeroize::Zeroizing::new(key.serialize_pem()),
        csr.pem().map_err(|e| bug("CSR", e))?,
    ))
}
