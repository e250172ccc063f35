//! The Debian package as an operator gets it. scripts/deb.sh packages the debug binaries the
//! suite builds anyway (a release build would cost CI minutes), `dpkg-deb -x` unpacks it into a
//! throwaway root, and that root is checked: every file and its mode, the conffiles, the
//! maintainer scripts, the binaries, the man pages and completions, and `systemd-analyze verify`
//! of the installed unit.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Whether `cargo deb` runs. CI installs it (`cargo xtask test`), so there its absence is a
/// failure; elsewhere the test says it skipped.
fn cargo_deb_installed() -> bool {
    let found = Command::new(cargo())
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            !in_ci(),
            "cargo deb is not installed: CI must have it (cargo install --locked cargo-deb)"
        );
        println!("skipped: cargo deb not installed (cargo install --locked cargo-deb)");
    }
    found
}

/// A private scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8(run(command).stdout).expect("UTF-8 output")
}

/// Every file under `root` (relative path) with its permission bits.
fn files(root: &Path) -> BTreeMap<String, u32> {
    fn walk(root: &Path, dir: &Path, found: &mut BTreeMap<String, u32>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(root, &path, found);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                found.insert(rel, meta.permissions().mode() & 0o7777);
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(root, root, &mut found);
    found
}

/// The man pages clap_mangen writes for a command: its own and one per visible subcommand,
/// named by the path to it (`hookd-dlq-purge`).
fn man_pages(command: &clap::Command, prefix: &str, pages: &mut Vec<String>) {
    let name = match prefix {
        "" => command.get_name().to_owned(),
        _ => format!("{prefix}-{}", command.get_name()),
    };
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, &name, pages);
    }
    pages.push(name);
}

fn expected_files() -> BTreeMap<String, u32> {
    let mut expected: BTreeMap<String, u32> = [
        ("usr/bin/hookd", 0o755),
        ("usr/bin/hooktop", 0o755),
        ("usr/lib/systemd/system/hookd.service", 0o644),
        ("etc/hookd/hookd.env", 0o600),
        ("etc/hookd/hookd.toml", 0o644),
        ("usr/share/bash-completion/completions/hookd", 0o644),
        ("usr/share/bash-completion/completions/hooktop", 0o644),
        ("usr/share/zsh/vendor-completions/_hookd", 0o644),
        ("usr/share/zsh/vendor-completions/_hooktop", 0o644),
        ("usr/share/fish/vendor_completions.d/hookd.fish", 0o644),
        ("usr/share/fish/vendor_completions.d/hooktop.fish", 0o644),
        ("usr/share/doc/hookd/README.md", 0o644),
        ("usr/share/doc/hookd/INSTALL.md", 0o644),
        ("usr/share/doc/hookd/copyright", 0o644),
    ]
    .into_iter()
    .map(|(path, mode)| (path.to_owned(), mode))
    .collect();
    let mut pages = vec!["hooktop".to_owned()];
    man_pages(&hookd::cli::Cli::command(), "", &mut pages);
    for page in pages {
        expected.insert(format!("usr/share/man/man1/{page}.1.gz"), 0o644);
    }
    expected
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `systemd-analyze verify` of the unit as installed in `root`, against the host's own units
/// (copied into `root`, which has none). With `--root=` the unit's `ExecStart=/usr/bin/hookd` is
/// looked up in `root`, so the packaged binary is what is checked.
fn verify_installed_unit(root: &Path) {
    let host_units = Path::new("/lib/systemd/system");
    let copy = root.join("lib/systemd/system");
    std::fs::create_dir_all(&copy).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(host_units.join("."))
        .arg(&copy));
    // A hookd installed on this host must not stand in for the packaged one.
    let _ = std::fs::remove_file(copy.join("hookd.service"));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("/usr/lib/systemd/system/hookd.service")
        .output()
        .expect("run systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It exits 0 on an unknown key and only prints a warning (systemd.rs shows it would).
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify of the installed unit: {}\n{said}",
        out.status
    );
}

fn systemd_analyze_installed() -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            !in_ci(),
            "systemd-analyze is not installed: CI must have it"
        );
        println!("skipped the unit check: systemd-analyze not installed");
    }
    found
}

#[test]
fn the_debian_package_installs_what_it_should() {
    if !cargo_deb_installed() {
        return;
    }
    // This test binary lives in <target>/<profile>/deps/: package the binaries of that profile.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let release = profile_dir.ends_with("release");
    let mut build = Command::new(cargo());
    build
        .args([
            "build", "--quiet", "--locked", "-p", "hookd", "-p", "hooktop",
        ])
        .env("CARGO_TARGET_DIR", target_dir);
    if release {
        build.arg("--release");
    }
    run(&mut build);

    let scratch =
        Scratch(std::env::temp_dir().join(format!("hookd-it-package-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    let (out_dir, root, control) = (
        scratch.0.join("out"),
        scratch.0.join("root"),
        scratch.0.join("control"),
    );
    std::fs::create_dir_all(&out_dir).unwrap();
    // --fast: at xz's default level, the 40 MB of stripped debug binaries take 30 s more.
    run(Command::new("bash")
        .arg(Path::new(REPO).join("scripts/deb.sh"))
        .args(["--profile", if release { "release" } else { "dev" }])
        .args(["--no-build", "--fast", "-o"])
        .arg(&out_dir)
        .env("CARGO_TARGET_DIR", target_dir));

    let arch = stdout(Command::new("dpkg").arg("--print-architecture"));
    let name = format!("hookd_{VERSION}_{}.deb", arch.trim());
    let built: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        built,
        std::slice::from_ref(&name),
        "what scripts/deb.sh wrote"
    );
    let deb = out_dir.join(&name);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));

    // Exactly these files, with these modes.
    let found = files(&root);
    let expected = expected_files();
    assert_eq!(
        found, expected,
        "the package's files (left) and modes, against the expected ones (right)"
    );

    // The control archive: the package itself, its conffiles, and maintainer scripts that
    // neither enable nor start hookd (it needs its credentials first) but restart a running
    // one after an upgrade.
    let fields = read(control.join("control"));
    for field in [
        "Package: hookd".to_owned(),
        format!("Version: {VERSION}"),
        format!("Architecture: {}", arch.trim()),
    ] {
        assert!(fields.lines().any(|l| l == field), "{field} in:\n{fields}");
    }
    let conffiles: BTreeSet<_> = read(control.join("conffiles"))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        conffiles,
        BTreeSet::from([
            "/etc/hookd/hookd.env".into(),
            "/etc/hookd/hookd.toml".into()
        ])
    );
    let postinst = read(control.join("postinst"));
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    assert!(postinst.contains("try-restart hookd.service"), "{postinst}");
    // Enabled again after an upgrade only if the operator had enabled it.
    assert!(
        postinst.contains("if deb-systemd-helper debian-installed hookd.service; then"),
        "{postinst}"
    );

    // The shipped files are the repository's.
    for (installed, source) in [
        (
            "usr/lib/systemd/system/hookd.service",
            "systemd/hookd.service",
        ),
        ("etc/hookd/hookd.env", "systemd/hookd.env.example"),
        ("etc/hookd/hookd.toml", "systemd/hookd.toml.example"),
    ] {
        assert_eq!(
            read(root.join(installed)),
            read(Path::new(REPO).join(source)),
            "{installed}"
        );
    }

    for binary in ["hookd", "hooktop"] {
        let version = stdout(Command::new(root.join("usr/bin").join(binary)).arg("--version"));
        assert_eq!(version.trim(), format!("{binary} {VERSION}"));

        let page = root.join(format!("usr/share/man/man1/{binary}.1.gz"));
        let roff = stdout(Command::new("gzip").arg("-dc").arg(&page));
        assert!(roff.contains(&format!(".TH {binary} 1")), "{roff}");

        // bash really registers it; zsh and fish need not be installed here.
        let bash = root
            .join("usr/share/bash-completion/completions")
            .join(binary);
        let registered = stdout(
            Command::new("bash")
                .arg("-c")
                .arg(format!("source \"$1\" && complete -p {binary}"))
                .arg("bash")
                .arg(&bash),
        );
        assert!(registered.contains(binary), "{registered}");
        let zsh = read(root.join(format!("usr/share/zsh/vendor-completions/_{binary}")));
        assert!(zsh.starts_with(&format!("#compdef {binary}")), "{zsh}");
        let fish = read(root.join(format!("usr/share/fish/vendor_completions.d/{binary}.fish")));
        assert!(fish.contains(&format!("complete -c {binary}")), "{fish}");
    }
    let purge = stdout(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man1/hookd-dlq-purge.1.gz")),
    );
    assert!(purge.contains("force"), "{purge}");

    if systemd_analyze_installed() {
        verify_installed_unit(&root);
    }
}
