//! Caller identity from the mTLS client certificate, and per-service role checks
//! (threats A1, X4). A message field never names the caller.

use permafrost_core::Role;
use tonic::{Request, Status};
use x509_parser::prelude::*;

/// URI SAN prefix that carries a principal's role and id: `urn:permafrost:<role>:<id>`.
pub const PRINCIPAL_URI_PREFIX: &str = "urn:permafrost:";

/// Who is calling, as proven by a certificate the cluster CA signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The certificate's role.
    pub role: Role,
    /// The certificate's id (node id, coordinator id, custody or operator name).
    pub id: String,
}

/// Reads the principal from a DER certificate's `urn:permafrost:` URI SAN.
pub fn principal_from_der(der: &[u8]) -> Result<Principal, crate::ProtoError> {
    principal_from_der_text(der).map_err(crate::ProtoError::Certificate)
}

fn principal_from_der_text(der: &[u8]) -> Result<Principal, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?
        .ok_or("client certificate has no subjectAltName")?;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name {
            if let Some(rest) = uri.strip_prefix(PRINCIPAL_URI_PREFIX) {
                let (role, id) = rest.split_once(':').ok_or("malformed principal URI")?;
                let role: Role = role
                    .parse()
                    .map_err(|e: permafrost_core::CoreError| e.to_string())?;
                if id.is_empty() {
                    return Err("principal URI has an empty id".into());
                }
                return Ok(Principal {
                    role,
                    id: id.to_string(),
                });
            }
        }
    }
    Err("client certificate carries no permafrost principal".into())
}

/// The verified caller of `request` (the TLS layer already checked the chain to the cluster CA).
pub fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    if let Some(p) = request.extensions().get::<Principal>() {
        return Ok(p.clone());
    }
    let certs = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated("a client certificate signed by the cluster CA is required")
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    principal_from_der_text(leaf.as_ref()).map_err(Status::unauthenticated)
}

/// An interceptor admitting only callers whose certificate has `role`; it
/// stores the [`Principal`] in the request extensions for handlers.
#[derive(Clone, Copy, Debug)]
pub struct RequireRole(pub Role);

impl tonic::service::Interceptor for RequireRole {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let p = principal(&request)?;
        if p.role != self.0 {
            return Err(Status::permission_denied(format!(
                "role {} ({}) may not call this service; it requires role {}",
                p.role, p.id, self.0
            )));
        }
        request.extensions_mut().insert(p);
        Ok(request)
    }
}
