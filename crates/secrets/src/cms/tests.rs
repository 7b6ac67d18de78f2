#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use super::testpki::{Kind, Party, party};
use super::*;

const PLAIN: &[u8] = b"DB_PASSWORD = \"hunter2\"\n";

fn recipients(parties: &[&Party]) -> Recipients {
    let paths: Vec<PathBuf> = parties.iter().map(|p| p.cert.clone()).collect();
    Recipients::load(&paths).unwrap()
}

fn identity(p: &Party, with_cert: bool) -> Identity {
    Identity::load(&p.key, with_cert.then_some(p.cert.as_path())).unwrap()
}

fn err<T>(r: Result<T, SecretsError>) -> SecretsError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn file() -> &'static Path {
    Path::new("secrets.cms")
}

#[test]
fn every_recipient_rsa_or_ec_decrypts_what_was_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let ops = party(dir.path(), "ops", Kind::Rsa, 1);
    let ci = party(dir.path(), "ci", Kind::Ec, 2);
    let pem = encrypt(PLAIN, &recipients(&[&ops, &ci])).unwrap();
    assert!(pem.starts_with(b"-----BEGIN CMS-----"), "PEM CMS");
    for p in [&ops, &ci] {
        for with_cert in [true, false] {
            let out = decrypt(&pem, file(), &identity(p, with_cert), None).unwrap();
            assert_eq!(out.as_slice(), PLAIN);
        }
    }
    // A new content key every time.
    let again = encrypt(PLAIN, &recipients(&[&ops, &ci])).unwrap();
    assert_ne!(pem, again);
}

#[test]
fn der_input_is_read_too() {
    let dir = tempfile::tempdir().unwrap();
    let ops = party(dir.path(), "ops", Kind::Rsa, 1);
    let pem = encrypt(PLAIN, &recipients(&[&ops])).unwrap();
    let der = CmsContentInfo::from_pem(&pem).unwrap().to_der().unwrap();
    let out = decrypt(&der, file(), &identity(&ops, true), None).unwrap();
    assert_eq!(out.as_slice(), PLAIN);
}

#[test]
fn a_key_that_is_not_a_recipient_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let ops = party(dir.path(), "ops", Kind::Rsa, 1);
    let eve = party(dir.path(), "eve", Kind::Rsa, 9);
    let eve_ec = party(dir.path(), "eve-ec", Kind::Ec, 10);
    let known = recipients(&[&ops]);
    let pem = encrypt(PLAIN, &known).unwrap();

    // With the key's certificate: OpenSSL finds no recipient entry for it.
    let e = err(decrypt(&pem, file(), &identity(&eve, true), None));
    assert!(matches!(e, SecretsError::NotARecipient { .. }), "{e:?}");
    assert!(e.to_string().contains("eve.key"), "{e}");

    // Without it, but with the recorded recipients: they are listed.
    let e = err(decrypt(&pem, file(), &identity(&eve, false), Some(&known)));
    assert!(matches!(e, SecretsError::NotARecipient { .. }), "{e:?}");
    assert!(e.to_string().contains("CN=ops (serial 01)"), "{e}");

    // With neither, OpenSSL hides whether the key or the file is wrong.
    let e = err(decrypt(&pem, file(), &identity(&eve, false), None));
    assert!(matches!(e, SecretsError::Undecryptable { .. }), "{e:?}");
    assert!(e.to_string().contains("--cert"), "{e}");

    // An EC key has no recipient entry of its kind in an RSA-only file.
    let e = err(decrypt(&pem, file(), &identity(&eve_ec, false), None));
    assert!(matches!(e, SecretsError::NotARecipient { .. }), "{e:?}");
}

#[test]
fn identity_takes_the_certificate_from_the_key_file_and_checks_they_match() {
    let dir = tempfile::tempdir().unwrap();
    let ops = party(dir.path(), "ops", Kind::Rsa, 1);
    let other = party(dir.path(), "other", Kind::Rsa, 2);
    let combined = dir.path().join("ops.pem");
    let mut pem = std::fs::read(&ops.key).unwrap();
    pem.extend(std::fs::read(&ops.cert).unwrap());
    std::fs::write(&combined, pem).unwrap();
    let id = Identity::load(&combined, None).unwrap();
    assert!(format!("{id:?}").contains("CN=ops"), "{id:?}");
    assert!(!format!("{id:?}").contains("PRIVATE"), "{id:?}");

    let e = err(Identity::load(&ops.key, Some(&other.cert)));
    assert!(matches!(e, SecretsError::KeyCertMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains("CN=other"), "{e}");
}

#[test]
fn unusable_keys_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ops = party(dir.path(), "ops", Kind::Rsa, 1);
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let key = PKey::private_key_from_pem(&std::fs::read(&ops.key).unwrap()).unwrap();
    let locked = key
        .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"pw")
        .unwrap();
    let ed = PKey::generate_ed25519()
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    for (path, wants) in [
        (write("locked.key", &locked), "passphrase"),
        (ops.cert.clone(), "certificate but no private key"),
        (write("empty.key", b""), "no PEM private key"),
        (write("ed.key", &ed), "Ed25519"),
    ] {
        let e = err(Identity::load(&path, None));
        assert!(e.to_string().contains(wants), "{}: {e}", path.display());
    }
    let e = err(Identity::load(&dir.path().join("missing.key"), None));
    assert!(e.to_string().contains("missing.key"), "{e}");
}

#[test]
fn recipient_files_must_hold_rsa_or_ec_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ops = party(dir.path(), "ops", Kind::Rsa, 1);
    let e = err(Recipients::load(std::slice::from_ref(&ops.key)));
    assert!(
        e.to_string().contains("private key and no certificate"),
        "{e}"
    );
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = err(Recipients::load(&[empty]));
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
    // The same certificate twice is one recipient; to_pem reads back.
    let twice = Recipients::load(&[ops.cert.clone(), ops.cert.clone()]).unwrap();
    assert_eq!(twice.len(), 1);
    let back = Recipients::from_pem(&twice.to_pem().unwrap(), file()).unwrap();
    assert_eq!(back.describe(), ["CN=ops (serial 01)"]);
}

#[test]
fn what_is_not_enveloped_cms_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ops = party(dir.path(), "ops", Kind::Rsa, 1);
    let id = identity(&ops, true);
    let cert_pem = std::fs::read(&ops.cert).unwrap();
    for (bytes, wants) in [
        (b"".to_vec(), "(it is empty)"),
        (b"  \n".to_vec(), "(it is empty)"),
        (cert_pem, "(it holds a PEM CERTIFICATE)"),
        (PLAIN.to_vec(), "looks like plaintext"),
        (vec![0xff, 0x00, 0x13, 0x37], "is not a CMS file"),
    ] {
        let e = err(decrypt(&bytes, file(), &id, None));
        assert!(matches!(e, SecretsError::NotCms { .. }), "{e:?}");
        assert!(e.to_string().contains(wants), "{e}");
    }

    let key = PKey::private_key_from_pem(&std::fs::read(&ops.key).unwrap()).unwrap();
    let cert = X509::from_pem(&std::fs::read(&ops.cert).unwrap()).unwrap();
    let signed = CmsContentInfo::sign(
        Some(&cert),
        Some(&key),
        None,
        Some(PLAIN),
        CMSOptions::BINARY,
    )
    .unwrap()
    .to_pem()
    .unwrap();
    let e = err(decrypt(&signed, file(), &id, None));
    assert!(matches!(e, SecretsError::NotEnveloped { .. }), "{e:?}");
}

#[test]
fn damage_is_reported_as_corruption_when_the_recipient_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let ops = party(dir.path(), "ops", Kind::Rsa, 1);
    let id = identity(&ops, true);
    let pem = encrypt(PLAIN, &recipients(&[&ops])).unwrap();

    // Cut short: the PEM no longer decodes.
    let e = err(decrypt(&pem[..pem.len() / 2], file(), &id, None));
    assert!(matches!(e, SecretsError::Corrupt { .. }), "{e:?}");

    // The last ciphertext byte changed: the padding check fails.
    let mut der = CmsContentInfo::from_pem(&pem).unwrap().to_der().unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x55;
    let e = err(decrypt(&der, file(), &id, None));
    assert!(matches!(e, SecretsError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("tampered"), "{e}");

    // Garbage after a valid DER header.
    let mut broken = CmsContentInfo::from_pem(&pem).unwrap().to_der().unwrap();
    broken.truncate(40);
    let e = err(decrypt(&broken, file(), &id, None));
    assert!(matches!(e, SecretsError::Corrupt { .. }), "{e:?}");
}
