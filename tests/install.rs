//! `bin/install` into a temporary root (DESTDIR): the binary, the unit
//! pointing at it, the sysusers entry, the config with the secret file
//! enabled and a 0600 secret; a second run overwrites neither; the
//! installed binary accepts the installed config; `--uninstall` keeps the
//! config and secret, `--purge` removes them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn install(root: &Path, args: &[&str]) -> String {
    let out = Command::new("bin/install")
        .args(["--destdir", root.to_str().expect("utf8"), "--prefix", "/opt/turnd"])
        .args(["--binary", env!("CARGO_BIN_EXE_turnd")])
        .args(args)
        .output()
        .expect("bin/install runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bin/install {args:?}: {text}");
    text
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("exists").permissions().mode() & 0o777
}

#[test]
fn install_reinstall_uninstall_into_a_temporary_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let out = install(root, &[]);
    assert!(
        out.contains("Open in the firewall") && out.contains("systemctl enable --now turnd"),
        "{out}"
    );

    let bin = root.join("opt/turnd/bin/turnd");
    assert_eq!(mode(&bin), 0o755);
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/turnd.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/opt/turnd/bin/turnd --config /etc/turnd/turnd.toml"),
        "{unit}"
    );
    assert!(unit.contains("Type=notify") && unit.contains("User=turnd"));
    let sysusers = std::fs::read_to_string(root.join("usr/lib/sysusers.d/turnd.conf")).expect("sysusers");
    assert!(sysusers.starts_with("u turnd "), "{sysusers}");
    let secret_path = root.join("etc/turnd/secret");
    assert_eq!(mode(&secret_path), 0o600);
    let secret = std::fs::read_to_string(&secret_path).expect("secret");
    assert_eq!(secret.trim().len(), 64, "32 random bytes in hex");
    let cfg_path = root.join("etc/turnd/turnd.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    assert!(
        cfg.contains("\nstatic-auth-secret-files = [\"/etc/turnd/secret\"]\n"),
        "secret file not enabled"
    );

    // The installed binary accepts the installed config (its secret path
    // moved into the temporary root).
    let moved = dir.path().join("check.toml");
    std::fs::write(
        &moved,
        cfg.replace("/etc/turnd/secret", secret_path.to_str().expect("utf8")),
    )
    .expect("write");
    let out = Command::new(&bin)
        .arg("check-config")
        .arg(&moved)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("listen tcp 0.0.0.0:443 (auto)") && text.contains("relay ports udp 49152-65535"),
        "{text}"
    );

    // A second run keeps an edited config and the secret.
    std::fs::write(&cfg_path, format!("{cfg}\n# edited\n")).expect("edit");
    let out = install(root, &[]);
    assert!(out.contains("kept the existing"), "{out}");
    assert!(std::fs::read_to_string(&cfg_path)
        .expect("config")
        .ends_with("# edited\n"));
    assert_eq!(std::fs::read_to_string(&secret_path).expect("secret"), secret);

    install(root, &["--uninstall"]);
    assert!(!bin.exists() && !root.join("etc/systemd/system/turnd.service").exists());
    assert!(!root.join("usr/lib/sysusers.d/turnd.conf").exists());
    assert!(
        cfg_path.exists() && secret_path.exists(),
        "uninstall removed the config or secret"
    );
    install(root, &["--uninstall", "--purge"]);
    assert!(!root.join("etc/turnd").exists());
}
