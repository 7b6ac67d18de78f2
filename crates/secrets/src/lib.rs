//! An application's secrets, encrypted at rest as CMS EnvelopedData.
//!
//! Why: passwords and API keys must not sit in plain text in a repository,
//! a manifest or a log, yet the services need them at run time. This crate
//! keeps them in one file that anyone may read and only the holders of a
//! recipient's private key can decrypt, in a standard format (RFC 5652) that
//! `openssl cms` reads and writes too, so no one depends on mortar to get at
//! their own secrets.
//!
//! # The file
//!
//! - `secrets.cms` (the name comes from the manifest's `[secrets] file`):
//!   PEM (`-----BEGIN CMS-----`) of a CMS ContentInfo holding EnvelopedData;
//!   content encrypted with AES-256-CBC under a fresh random key, that key
//!   encrypted for each recipient (RSA key transport, PKCS#1 v1.5; or ECDH
//!   key agreement for EC certificates). DER and S/MIME are read as well.
//! - The plaintext inside is a flat TOML table, `NAME = "value"` per line,
//!   names being the environment variables services receive ([`Secrets`]).
//! - `secrets.recipients.pem` beside it: the recipients' certificates, so
//!   the file can be re-encrypted for the same people ([`SecretsFile`]).
//!
//! # Guarantees
//!
//! - Values are [`SecretValue`]s: `Debug`/`Display` print `<redacted>`, and
//!   no error message of this crate contains a value.
//! - Plaintext is never written to disk, except into the private, wiped and
//!   removed editing directory of [`Scratch`].
//! - Files are replaced atomically ([`write_atomic`]): a failed command
//!   leaves the old file.
//!
//! EnvelopedData has no integrity protection of its own (RFC 5652 leaves
//! that to signatures or AuthEnvelopedData); a damaged file is detected by
//! the padding check and by the content no longer being a valid table,
//! which catches accidental damage, not a careful forger. Keep the file
//! under version control.

mod cms;
mod error;
mod file;
mod scratch;
mod table;
mod value;

pub use cms::{Identity, Recipients, decrypt, encrypt, encrypt_der};
pub use error::SecretsError;
pub use file::{SecretsFile, write_atomic};
pub use scratch::Scratch;
pub use table::{MAX_VALUE_BYTES, Secrets, name_problem};
pub use value::{REDACTED, SecretValue};
