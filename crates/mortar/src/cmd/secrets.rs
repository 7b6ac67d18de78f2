//! `mortar secrets …`: the app's CMS-encrypted secrets file.
//!
//! Every command validates its input completely before it writes, and
//! writes atomically, so a mistake changes no file. Plaintext goes only to
//! stdout (`decrypt`) or, for `edit`, into the private directory of
//! [`Scratch`], wiped and removed whatever happens.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use mortar_secrets::{
    Identity, Recipients, Scratch, SecretValue, Secrets, SecretsError, SecretsFile,
};
use tokio::signal::unix::{SignalKind, signal};
use zeroize::Zeroizing;

use crate::cli::{
    RecipientArgs, SecretsCommand, SecretsDecryptArgs, SecretsEditArgs, SecretsEncryptArgs,
    SecretsKeyArgs, SecretsNameArgs, SecretsRotateArgs, SecretsTarget,
};

/// The exit code after SIGINT, as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

pub(crate) fn run(command: SecretsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SecretsCommand::Encrypt(args) => encrypt(&args),
        SecretsCommand::Decrypt(args) => decrypt(&args),
        SecretsCommand::Edit(args) => super::runtime()?.block_on(edit(&args)),
        SecretsCommand::Set(args) => super::runtime()?.block_on(set(&args)),
        SecretsCommand::Unset(args) => unset(&args),
        SecretsCommand::Rotate(args) => rotate(&args),
    }
}

/// The secrets file named on the command line, or the manifest's.
fn target(target: &SecretsTarget) -> anyhow::Result<Result<SecretsFile, ExitCode>> {
    if let Some(file) = &target.secrets_file {
        return Ok(Ok(SecretsFile::new(file)));
    }
    let path = &target.manifest.file;
    if !path.exists() {
        bail!(
            "no secrets file given and no manifest {} to take it from; pass the secrets file, or -f MANIFEST",
            path.display()
        );
    }
    Ok(super::load_manifest(path).map(|manifest| SecretsFile::new(manifest.secrets_file())))
}

/// The identity from `--key` / `MORTAR_SECRETS_KEY`.
fn identity(key: &SecretsKeyArgs) -> anyhow::Result<Identity> {
    let Some(path) = &key.key else {
        bail!(
            "no private key to decrypt with: pass --key PATH or set MORTAR_SECRETS_KEY to the PEM private key of one of the file's recipients"
        );
    };
    Ok(Identity::load(path, key.cert.as_deref())?)
}

/// The recipients given with `-r`, else the recorded ones.
fn recipients(file: &SecretsFile, args: &RecipientArgs) -> anyhow::Result<Recipients> {
    if !args.recipients.is_empty() {
        return Ok(Recipients::load(&args.recipients)?);
    }
    match file.recipients()? {
        Some(recorded) => Ok(recorded),
        None => Err(SecretsError::NoRecipients {
            recipients_file: file.recipients_path(),
        }
        .into()),
    }
}

/// The current secrets: decrypted when the file exists, none when it does
/// not (the key is needed only in the first case).
fn current(file: &SecretsFile, key: &SecretsKeyArgs) -> anyhow::Result<Secrets> {
    if file.exists() {
        Ok(file.open(&identity(key)?)?)
    } else {
        Ok(Secrets::new())
    }
}

/// Saves and says what was written, without values.
fn save(
    file: &SecretsFile,
    before: &Secrets,
    after: &Secrets,
    recipients: &Recipients,
) -> anyhow::Result<ExitCode> {
    file.save(after, recipients)?;
    eprintln!(
        "{}: {} secret(s) encrypted for {} recipient(s) ({}){}",
        file.path().display(),
        after.len(),
        recipients.len(),
        recipients.describe().join("; "),
        changes(before, after)
    );
    Ok(ExitCode::SUCCESS)
}

/// "; added: A; changed: B; removed: C" — names only.
fn changes(before: &Secrets, after: &Secrets) -> String {
    let names: BTreeSet<&str> = before.names().chain(after.names()).collect();
    let (mut added, mut changed, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        match (before.get(name), after.get(name)) {
            (None, Some(_)) => added.push(name),
            (Some(_), None) => removed.push(name),
            (Some(a), Some(b)) if a != b => changed.push(name),
            _ => {}
        }
    }
    let mut out = String::new();
    for (label, list) in [("added", added), ("changed", changed), ("removed", removed)] {
        if !list.is_empty() {
            out.push_str(&format!("; {label}: {}", list.join(", ")));
        }
    }
    out
}

fn encrypt(args: &SecretsEncryptArgs) -> anyhow::Result<ExitCode> {
    let file = match target(&args.target)? {
        Ok(file) => file,
        Err(code) => return Ok(code),
    };
    // Recipients first: a mistake there should not cost typing the table.
    let recipients = recipients(&file, &args.recipients)?;
    let (plaintext, origin) = match &args.from {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the plaintext {}", path.display()))?;
            (Zeroizing::new(bytes), path.display().to_string())
        }
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("type the secrets table (NAME = \"value\" lines), then Ctrl-D:");
            }
            let mut bytes = Zeroizing::new(Vec::new());
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the plaintext from stdin")?;
            (bytes, "stdin".to_owned())
        }
    };
    let secrets = Secrets::parse(&plaintext, &origin)?;
    // The content is replaced whole; a list of changes would mislead.
    save(&file, &secrets, &secrets, &recipients)
}

fn decrypt(args: &SecretsDecryptArgs) -> anyhow::Result<ExitCode> {
    let file = match target(&args.target)? {
        Ok(file) => file,
        Err(code) => return Ok(code),
    };
    let secrets = file.open(&identity(&args.key)?)?;
    let mut out = std::io::stdout().lock();
    out.write_all(secrets.to_toml().as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn rotate(args: &SecretsRotateArgs) -> anyhow::Result<ExitCode> {
    let file = match target(&args.target)? {
        Ok(file) => file,
        Err(code) => return Ok(code),
    };
    let secrets = file.open(&identity(&args.key)?)?;
    let recipients = recipients(&file, &args.recipients)?;
    save(&file, &secrets, &secrets, &recipients)
}

fn unset(args: &SecretsNameArgs) -> anyhow::Result<ExitCode> {
    let file = match target(&args.target)? {
        Ok(file) => file,
        Err(code) => return Ok(code),
    };
    let before = current(&file, &args.key)?;
    let mut after = before.clone();
    if after.remove(&args.name).is_none() {
        let held: Vec<&str> = before.names().collect();
        bail!(
            "{} has no secret {}; it holds: {}",
            file.path().display(),
            args.name,
            if held.is_empty() {
                "none".to_owned()
            } else {
                held.join(", ")
            }
        );
    }
    let recipients = recipients(&file, &args.recipients)?;
    save(&file, &before, &after, &recipients)
}

async fn set(args: &SecretsNameArgs) -> anyhow::Result<ExitCode> {
    let file = match target(&args.target)? {
        Ok(file) => file,
        Err(code) => return Ok(code),
    };
    if let Some(problem) = mortar_secrets::name_problem(&args.name) {
        bail!("{problem}");
    }
    let before = current(&file, &args.key)?;
    let recipients = recipients(&file, &args.recipients)?;
    let Some(value) = read_value(&args.name).await? else {
        eprintln!("interrupted; nothing changed");
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    };
    let mut after = before.clone();
    after.insert(&args.name, value)?;
    save(&file, &before, &after, &recipients)
}

/// The value for `set`: one line typed without echo on a terminal, else all
/// of stdin; one trailing newline is dropped. `None` after Ctrl-C.
async fn read_value(name: &str) -> anyhow::Result<Option<SecretValue>> {
    let mut text = Zeroizing::new(String::new());
    if std::io::stdin().is_terminal() {
        eprint!("value of {name} (not shown): ");
        let quiet = NoEcho::new()?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let line = tokio::task::spawn_blocking(|| {
            let mut line = Zeroizing::new(String::new());
            std::io::stdin().read_line(&mut line).map(|_| line)
        });
        tokio::select! {
            line = line => {
                text = line.context("cannot read the value")?.context("cannot read the value")?;
            }
            _ = interrupt.recv() => {
                drop(quiet);
                eprintln!();
                return Ok(None);
            }
        }
        drop(quiet);
        eprintln!();
    } else {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the value from stdin (is it UTF-8?)")?;
    }
    let value = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(Some(SecretValue::new(value)))
}

/// Terminal echo off while a secret is typed; restored on drop.
struct NoEcho {
    saved: nix::sys::termios::Termios,
}

impl NoEcho {
    fn new() -> anyhow::Result<NoEcho> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("cannot read the terminal settings")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("cannot turn terminal echo off")?;
        Ok(NoEcho { saved })
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

async fn edit(args: &SecretsEditArgs) -> anyhow::Result<ExitCode> {
    let file = match target(&args.target)? {
        Ok(file) => file,
        Err(code) => return Ok(code),
    };
    let before = current(&file, &args.key)?;
    let recipients = recipients(&file, &args.recipients)?;
    let original = before.to_toml();
    let scratch = Scratch::create("secrets.toml", original.as_bytes())?;
    if !scratch.in_memory() {
        eprintln!(
            "note: no memory file system ($XDG_RUNTIME_DIR, /dev/shm) found; the plaintext is on disk in {} (mode 0700) until the editor closes, then wiped and removed",
            scratch.path().display()
        );
    }
    loop {
        if let Err(e) = run_editor(scratch.path()).await {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::FAILURE);
        }
        let text = scratch.read()?;
        if text.as_slice() == original.as_bytes() && args.recipients.recipients.is_empty() {
            eprintln!("no changes; {} left as it was", file.path().display());
            return Ok(ExitCode::SUCCESS);
        }
        match Secrets::parse(&text, "the edited secrets") {
            Ok(after) => return save(&file, &before, &after, &recipients),
            Err(e) => {
                eprintln!("error: {e}");
                if !std::io::stdin().is_terminal() || !ask("edit again? [Y/n] ").await? {
                    eprintln!("nothing changed");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
}

/// Runs `$VISUAL`, else `$EDITOR`, else `vi`, on `path`, through `sh` so
/// that an editor with arguments (`code --wait`) works as it does for git.
///
/// Ctrl-C and Ctrl-\ go to the editor (it is in the terminal's foreground
/// group); mortar ignores them meanwhile so it is still there to wipe the
/// plaintext. SIGTERM or SIGHUP ends the editor and the edit.
async fn run_editor(path: &Path) -> anyhow::Result<()> {
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned());
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("mortar-secrets-edit")
        .arg(path)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the editor {editor:?}"))?;
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.context("cannot wait for the editor")?;
                if !status.success() {
                    bail!("the editor ({editor}) exited with {status}; nothing changed");
                }
                return Ok(());
            }
            _ = interrupt.recv() => {}
            _ = quit.recv() => {}
            _ = terminate.recv() => {
                let _ = child.kill().await;
                bail!("terminated; nothing changed");
            }
            _ = hangup.recv() => {
                let _ = child.kill().await;
                bail!("the terminal went away; nothing changed");
            }
        }
    }
}

/// Asks a yes/no question on the terminal; Enter means yes, Ctrl-C and
/// end of input no.
async fn ask(question: &str) -> anyhow::Result<bool> {
    eprint!("{question}");
    let mut interrupt = signal(SignalKind::interrupt())?;
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map(|read| (read > 0).then_some(line))
    });
    tokio::select! {
        answer = answer => {
            let answer = answer.context("cannot read the answer")?.context("cannot read the answer")?;
            let Some(answer) = answer else {
                eprintln!();
                return Ok(false);
            };
            let answer = answer.trim().to_ascii_lowercase();
            Ok(answer.is_empty() || answer == "y" || answer == "yes")
        }
        _ = interrupt.recv() => {
            eprintln!();
            Ok(false)
        }
    }
}
