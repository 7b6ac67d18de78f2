//! `mortar dashboard`: asks the running node for a one-time login link to
//! its web dashboard and prints it (and, with `--open`, opens it). The link
//! holds a token the node exchanges, once and within a minute, for a
//! browser session cookie; the admin token itself never reaches the browser.

use std::process::ExitCode;

use crate::cli::DashboardArgs;

pub(crate) async fn run(args: DashboardArgs) -> anyhow::Result<ExitCode> {
    let client = super::admin_client(&args.target.manifest.file, &args.target.node)?;
    let link = client.dashboard_login().await?;
    println!("{}", link.url);
    eprintln!(
        "open this link in a browser on this machine within {} s; it works once",
        link.expires_in_s
    );
    if args.open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        // The link is printed either way; failing to open it is not fatal.
        if let Err(e) = std::process::Command::new(opener)
            .arg(&link.url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            eprintln!("could not run {opener} ({e}); open the link by hand");
        }
    }
    Ok(ExitCode::SUCCESS)
}
