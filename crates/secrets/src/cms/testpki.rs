//! Self-signed certificates and keys made in-process for unit tests.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};

/// Which kind of key to make.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Rsa,
    Ec,
}

/// A key and its self-signed certificate, written as PEM files in `dir`:
/// `<name>.key` and `<name>.crt`.
pub(crate) struct Party {
    pub(crate) key: PathBuf,
    pub(crate) cert: PathBuf,
}

pub(crate) fn party(dir: &Path, name: &str, kind: Kind, serial: u32) -> Party {
    let key: PKey<Private> = match kind {
        Kind::Rsa => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
        Kind::Ec => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
            PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
        }
    };
    let mut subject = X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", name).unwrap();
    let subject = subject.build();
    let mut builder = X509::builder().unwrap();
    builder.set_version(2).unwrap();
    builder
        .set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    builder.set_subject_name(&subject).unwrap();
    builder.set_issuer_name(&subject).unwrap();
    builder.set_pubkey(&key).unwrap();
    builder
        .set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    builder.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = builder.build();
    let party = Party {
        key: dir.join(format!("{name}.key")),
        cert: dir.join(format!("{name}.crt")),
    };
    std::fs::write(&party.key, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(&party.cert, cert.to_pem().unwrap()).unwrap();
    party
}
