//! `cargo xtask dev`: hookd on 127.0.0.1:8080 against a development cluster that outlives it,
//! with secrets generated once and a demo business for the samples `hookd send` posts.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use pgcluster::Cluster;

use crate::{cargo, heading, repo, step, target_dir};

const DEFAULT_PORT: u16 = 54329;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let dev = repo().join(".hookd-dev");
    std::fs::create_dir_all(&dev).with_context(|| format!("cannot create {}", dev.display()))?;
    let mut cluster = None;
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            heading("Using DATABASE_URL from the environment (no local cluster)");
            url
        }
        _ => {
            heading("PostgreSQL development cluster (.hookd-dev/pg)");
            // As root the server runs as `postgres`, which must traverse this directory.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o755))?;
            let port = match std::env::var("HOOKD_DEV_PG_PORT") {
                Ok(port) => port.parse().context("HOOKD_DEV_PG_PORT is not a port")?,
                Err(_) => DEFAULT_PORT,
            };
            let started = Cluster::persistent(dev.join("pg"))
                .port(port)
                .database("hookd")
                .start()
                .with_context(|| format!("cannot start the development cluster on port {port}"))?;
            let url = started.url("hookd");
            cluster = Some(started);
            url
        }
    };

    let release = match std::env::var("HOOKD_DEV_PROFILE").as_deref() {
        Ok("release") => true,
        Ok("debug") | Err(_) => false,
        Ok(other) => bail!("HOOKD_DEV_PROFILE must be release or debug, not {other:?}"),
    };
    heading("Build hookd");
    let mut build = cargo();
    build.args(["build", "--locked", "-p", "hookd"]);
    if release {
        build.arg("--release");
    }
    // Keeps compile-time tooling away from the (perhaps not yet migrated) database.
    step(build.env_remove("DATABASE_URL"))?;
    let hookd = target_dir()?
        .join(if release { "release" } else { "debug" })
        .join("hookd");
    let shown = hookd
        .strip_prefix(repo())
        .map_or(hookd.clone(), |p| Path::new(".").join(p));

    let secrets = secrets(&dev, &hookd)?;
    heading("Development setup: NOT for production");
    eprintln!("Secrets (.hookd-dev/secrets.env; delete it to get new ones):");
    for (name, value) in &secrets {
        eprintln!("    export {name}={value}");
    }
    eprintln!("\nDATABASE_URL={url}");
    if let Some(cluster) = &cluster {
        let stop = cluster.ctl(&["stop", "-m", "fast"]);
        let words: Vec<_> = std::iter::once(stop.get_program())
            .chain(stop.get_args())
            .map(|word| word.to_string_lossy())
            .collect();
        eprintln!(
            "    trust auth on 127.0.0.1 only; it keeps running after hookd. Stop it with:\n    {}",
            words.join(" ")
        );
    }
    eprintln!(
        "\nIn another terminal:\n    cd {} && source .hookd-dev/secrets.env && {} send stripe \
         customer.subscription.created",
        repo().display(),
        shown.display()
    );

    heading("hookd migrate");
    let hookd_command = || {
        let mut command = Command::new(&hookd);
        command
            .env("DATABASE_URL", &url)
            .envs(secrets.iter().cloned());
        command
    };
    step(hookd_command().arg("migrate"))?;
    if let Some(cluster) = &cluster {
        // The business the samples name (their Stripe customer and phone number), so demo
        // events are applied instead of waiting for a business to be linked.
        cluster.psql(
            "hookd",
            "INSERT INTO public.businesses (name, stripe_customer_id, phone_number)
             VALUES ('Demo Plumbing', 'cus_hookd_demo', '+15550100000') ON CONFLICT DO NOTHING",
        )?;
    }

    heading(&format!("hookd serve {}", args.join(" ")));
    let error = hookd_command().arg("serve").args(args).exec();
    Err(error).with_context(|| format!("cannot run {}", hookd.display()))
}

/// The development secrets, made once by `hookd dev-secrets` (which prints `export NAME=value`
/// lines, so the file can be sourced by a shell too).
fn secrets(dev: &Path, hookd: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let file = dev.join("secrets.env");
    if !file.exists() {
        heading("Generating development secrets (once) into .hookd-dev/secrets.env");
        let output = Command::new(hookd)
            .arg("dev-secrets")
            .output()
            .with_context(|| format!("cannot run {} dev-secrets", hookd.display()))?;
        if !output.status.success() {
            bail!(
                "hookd dev-secrets failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        write_private(&file, &output.stdout)?;
    }
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let secrets: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    if secrets.is_empty() {
        bail!(
            "{} holds no `export NAME=value` lines; delete it",
            file.display()
        );
    }
    Ok(secrets)
}

/// Written to a scratch file of mode 600 and renamed, so an interrupted first run leaves no
/// half file and nobody else ever reads the secrets.
fn write_private(file: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let scratch = file.with_extension("env.new");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&scratch)
        .and_then(|mut f| f.write_all(contents))
        .and_then(|()| std::fs::rename(&scratch, file))
        .with_context(|| format!("cannot write {}", file.display()))
}
