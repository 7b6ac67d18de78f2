//! The secrets file interoperates with the `openssl cms` command in both
//! directions: what mortar writes, `openssl cms -decrypt` reads, and what
//! `openssl cms -encrypt` writes (PEM, DER or S/MIME; RSA PKCS#1 v1.5 or
//! OAEP, EC; AES-256-CBC or -GCM), mortar reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use mortar_secrets::{Identity, Recipients, SecretValue, Secrets, SecretsError, SecretsFile};
use mortar_test_support::openssl::{Party, cms_decrypt, cms_encrypt, ec_party, rsa_party};

fn secrets() -> Secrets {
    let mut s = Secrets::new();
    s.insert("DB_PASSWORD", SecretValue::new("pa$$ \"word\"\n2"))
        .unwrap();
    s.insert("API_KEY", SecretValue::new("k-ü-123")).unwrap();
    s
}

const PLAINTEXT: &str = "# written by hand\nDB_PASSWORD = \"hunter2\"\nAPI_KEY = 'k-123'\n";

fn open(file: &Path, party: &Party, with_cert: bool) -> Result<Secrets, SecretsError> {
    let id = Identity::load(&party.key, with_cert.then_some(party.cert.as_path()))?;
    SecretsFile::new(file).open(&id)
}

#[test]
fn openssl_cms_decrypt_reads_what_mortar_secrets_writes() {
    let dir = tempfile::tempdir().unwrap();
    let ops = rsa_party(dir.path(), "ops");
    let ci = ec_party(dir.path(), "ci");
    let file = SecretsFile::new(dir.path().join("secrets.cms"));
    let recipients = Recipients::load(&[ops.cert.clone(), ci.cert.clone()]).unwrap();
    file.save(&secrets(), &recipients).unwrap();

    for party in [&ops, &ci] {
        let plain = cms_decrypt(file.path(), "PEM", &party.key);
        assert_eq!(
            String::from_utf8(plain).unwrap(),
            *secrets().to_toml(),
            "openssl decrypts for {}",
            party.key.display()
        );
    }
}

#[test]
fn mortar_secrets_reads_what_openssl_cms_encrypt_writes() {
    let dir = tempfile::tempdir().unwrap();
    let ops = rsa_party(dir.path(), "ops");
    let ci = ec_party(dir.path(), "ci");
    let expected = Secrets::parse(PLAINTEXT.as_bytes(), "expected").unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "pem",
            cms_encrypt(PLAINTEXT.as_bytes(), &[&ops.cert, &ci.cert], "PEM", &[]),
        ),
        (
            "der",
            cms_encrypt(PLAINTEXT.as_bytes(), &[&ops.cert], "DER", &[]),
        ),
        (
            "smime",
            cms_encrypt(PLAINTEXT.as_bytes(), &[&ops.cert], "SMIME", &[]),
        ),
        (
            "oaep",
            cms_encrypt(
                PLAINTEXT.as_bytes(),
                &[],
                "PEM",
                &[
                    "-recip",
                    ops.cert.to_str().unwrap(),
                    "-keyopt",
                    "rsa_padding_mode:oaep",
                ],
            ),
        ),
        (
            "gcm",
            mortar_test_support::openssl::run_openssl(
                &[
                    "cms",
                    "-encrypt",
                    "-binary",
                    "-aes-256-gcm",
                    "-outform",
                    "PEM",
                    ops.cert.to_str().unwrap(),
                ],
                PLAINTEXT.as_bytes(),
            ),
        ),
        (
            // Without -binary, openssl turns line ends into CRLF.
            "text",
            mortar_test_support::openssl::run_openssl(
                &[
                    "cms",
                    "-encrypt",
                    "-aes256",
                    "-outform",
                    "PEM",
                    ops.cert.to_str().unwrap(),
                ],
                PLAINTEXT.as_bytes(),
            ),
        ),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(format!("{name}.cms"));
        std::fs::write(&path, bytes).unwrap();
        for with_cert in [true, false] {
            let got = open(&path, &ops, with_cert)
                .unwrap_or_else(|e| panic!("{name} (cert: {with_cert}): {e}"));
            assert_eq!(got, expected, "{name}");
        }
    }
    let pem = dir.path().join("pem.cms");
    assert_eq!(open(&pem, &ci, false).unwrap(), expected, "EC recipient");
}

#[test]
fn a_file_openssl_encrypted_for_someone_else_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let ops = rsa_party(dir.path(), "ops");
    let eve = rsa_party(dir.path(), "eve");
    let path = dir.path().join("secrets.cms");
    std::fs::write(
        &path,
        cms_encrypt(PLAINTEXT.as_bytes(), &[&ops.cert], "PEM", &[]),
    )
    .unwrap();
    let e = open(&path, &eve, true).unwrap_err();
    assert!(matches!(e, SecretsError::NotARecipient { .. }), "{e:?}");
    assert!(e.to_string().contains("eve.key"), "{e}");
    let e = open(&path, &eve, false).unwrap_err();
    assert!(
        e.to_string().contains("not the key of any recipient"),
        "{e}"
    );
}
