//! `labhub keygen`: make a CURVE key pair (Z85 public key file + encrypted secret key file).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use labhub::home::default_home;
use labhub::keys::{self, KeyPair};
use zeroize::Zeroizing;

/// Make a key pair: `<OUT>.pub` (Z85, 0644) and `<OUT>.secret` (0600, encrypted with a password
/// by Argon2id + ChaCha20-Poly1305). Existing files are never overwritten.
///
/// The password comes from --secret-file, else LABHUB_BROKER_SECRET (broker keys) or
/// LABHUB_CLIENT_SECRET (client keys), else a prompt on the terminal.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Make a client key (default: the broker's key, written to <home>/keys/broker).
    #[arg(long)]
    client: bool,
    /// Path of the files without suffix [default: <home>/keys/broker, or ./labhub-client with --client].
    #[arg(long, value_name = "PATH", value_parser = crate::args::path)]
    out: Option<PathBuf>,
    /// The labhub home [env: LABHUB_HOME].
    #[arg(long, value_name = "DIR", value_parser = crate::args::path)]
    home: Option<PathBuf>,
    /// A file (mode 0600) holding the password.
    #[arg(long, value_name = "FILE", value_parser = crate::args::path)]
    secret_file: Option<PathBuf>,
    /// Write the secret key unencrypted (protected by its 0600 mode only; client keys only).
    #[arg(long, requires = "client")]
    plain: bool,
}

/// Generates and writes the pair, printing the public key.
pub fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let env = |k: &str| std::env::var(k).ok();
    let out = match args.out {
        Some(p) => p,
        None if args.client => PathBuf::from("labhub-client"),
        None => {
            let home = match args.home {
                Some(h) => h,
                None => default_home(&env)?,
            };
            keys::ensure_private_dir(&home)?;
            keys::ensure_private_dir(&home.join("keys"))?;
            home.join("keys").join("broker")
        }
    };
    let password: Option<Zeroizing<String>> = if args.plain {
        None
    } else if let Some(file) = &args.secret_file {
        let text = keys::read_secret_text(file)?;
        Some(Zeroizing::new(
            text.trim_end_matches(['\n', '\r']).to_owned(),
        ))
    } else if let Some(p) = env(if args.client {
        "LABHUB_CLIENT_SECRET"
    } else {
        "LABHUB_BROKER_SECRET"
    })
    .filter(|p| !p.is_empty())
    {
        Some(Zeroizing::new(p))
    } else if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password("password for the new secret key: ")
                .context("reading the password")?,
        );
        let again = Zeroizing::new(
            rpassword::prompt_password("repeat the password: ").context("reading the password")?,
        );
        if *first != *again || first.is_empty() {
            bail!("the passwords differ or are empty");
        }
        Some(first)
    } else {
        bail!(
            "no password: pass --secret-file, set {}, run on a terminal, or use --client --plain",
            if args.client {
                "LABHUB_CLIENT_SECRET"
            } else {
                "LABHUB_BROKER_SECRET"
            }
        );
    };
    let pair = KeyPair::generate();
    keys::write_pair(&out, &pair, password.as_deref().map(String::as_str))?;
    eprintln!(
        "wrote {} and {}",
        keys::with_suffix(&out, "pub").display(),
        keys::with_suffix(&out, "secret").display()
    );
    crate::common::out(pair.public)?;
    Ok(ExitCode::SUCCESS)
}
