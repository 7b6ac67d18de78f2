//! The `openssl` command line, for tests that prove mortar's secrets files
//! interoperate with it, and for making keys and certificates the way a
//! user would.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A private key and its self-signed certificate, as PEM files.
#[derive(Debug, Clone)]
pub struct Party {
    /// `<name>.key`: the unencrypted private key (PKCS#8).
    pub key: PathBuf,
    /// `<name>.crt`: the certificate, `CN=<name>`.
    pub cert: PathBuf,
}

/// Runs `openssl args…` with `stdin` as its input; returns its stdout, or
/// panics with its stderr. Panics with install instructions when the
/// command is missing (`.ci/run` installs it).
pub fn run_openssl<S: AsRef<OsStr>>(args: &[S], stdin: &[u8]) -> Vec<u8> {
    let (ok, stdout, stderr) = try_openssl(args, stdin);
    assert!(
        ok,
        "openssl {:?} failed: {}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

/// Like [`run_openssl`], returning (success, stdout, stderr) instead of
/// panicking on failure.
pub fn try_openssl<S: AsRef<OsStr>>(args: &[S], stdin: &[u8]) -> (bool, Vec<u8>, Vec<u8>) {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `openssl` ({e}); install it: apt-get install -y openssl")
        });
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (out.status.success(), out.stdout, out.stderr)
}

/// An RSA-2048 key and self-signed certificate in `dir`, made by
/// `openssl req -x509`.
pub fn rsa_party(dir: &Path, name: &str) -> Party {
    make_party(dir, name, &["-newkey", "rsa:2048"])
}

/// A P-256 EC key and self-signed certificate in `dir`.
pub fn ec_party(dir: &Path, name: &str) -> Party {
    make_party(
        dir,
        name,
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    )
}

fn make_party(dir: &Path, name: &str, key_args: &[&str]) -> Party {
    let party = Party {
        key: dir.join(format!("{name}.key")),
        cert: dir.join(format!("{name}.crt")),
    };
    let mut args: Vec<&OsStr> = vec!["req".as_ref(), "-x509".as_ref(), "-nodes".as_ref()];
    args.extend(key_args.iter().map(|a| OsStr::new(*a)));
    let subject = format!("/CN={name}");
    args.extend([
        OsStr::new("-subj"),
        subject.as_ref(),
        "-days".as_ref(),
        "30".as_ref(),
        "-keyout".as_ref(),
        party.key.as_os_str(),
        "-out".as_ref(),
        party.cert.as_os_str(),
    ]);
    run_openssl(&args, b"");
    party
}

/// `openssl cms -encrypt -binary -aes256 -outform <outform>` of `plaintext`
/// for the certificates `recipients`; extra arguments (e.g. `-keyopt
/// rsa_padding_mode:oaep`) go before the certificates.
pub fn cms_encrypt(
    plaintext: &[u8],
    recipients: &[&Path],
    outform: &str,
    extra: &[&str],
) -> Vec<u8> {
    let mut args: Vec<&OsStr> = vec![
        "cms".as_ref(),
        "-encrypt".as_ref(),
        "-binary".as_ref(),
        "-aes256".as_ref(),
        "-outform".as_ref(),
        outform.as_ref(),
    ];
    args.extend(extra.iter().map(|a| OsStr::new(*a)));
    args.extend(recipients.iter().map(|p| p.as_os_str()));
    run_openssl(&args, plaintext)
}

/// `openssl cms -decrypt -inform <inform> -inkey <key>` of the file `input`.
pub fn cms_decrypt(input: &Path, inform: &str, key: &Path) -> Vec<u8> {
    run_openssl(
        &[
            OsStr::new("cms"),
            "-decrypt".as_ref(),
            "-binary".as_ref(),
            "-inform".as_ref(),
            inform.as_ref(),
            "-in".as_ref(),
            input.as_os_str(),
            "-inkey".as_ref(),
            key.as_os_str(),
        ],
        b"",
    )
}
