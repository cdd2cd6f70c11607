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

/// The section names of a little-endian ELF64 file (empty if it is not one).
fn elf_sections(b: &[u8]) -> Vec<String> {
    let u16_at = |o: usize| b.get(o..o + 2).map(|x| u16::from_le_bytes([x[0], x[1]]) as usize);
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as usize)
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|x| u64::from_le_bytes(x.try_into().expect("8 bytes")) as usize)
    };
    if b.get(..5) != Some(b"\x7fELF\x02") {
        return Vec::new();
    }
    let (Some(shoff), Some(shentsize), Some(shnum), Some(shstrndx)) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e))
    else {
        return Vec::new();
    };
    let header = |i: usize| shoff + i * shentsize;
    let Some(strtab) = u64_at(header(shstrndx) + 0x18) else {
        return Vec::new();
    };
    (0..shnum)
        .filter_map(|i| {
            let name = strtab + u32_at(header(i))?;
            let end = b.get(name..)?.iter().position(|&c| c == 0)?;
            Some(String::from_utf8_lossy(&b[name..name + end]).into_owned())
        })
        .collect()
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
    // Shipped stripped: no debug sections, and much smaller than the build.
    let shipped = std::fs::read(&bin).expect("binary");
    let built = std::fs::read(env!("CARGO_BIN_EXE_turnd")).expect("built");
    assert!(
        elf_sections(&built).iter().any(|s| s == ".debug_info"),
        "the test build has debug sections to strip"
    );
    let sections = elf_sections(&shipped);
    assert!(!sections.is_empty(), "not an ELF file");
    assert!(
        !sections
            .iter()
            .any(|s| [".debug_info", ".debug_line", ".debug_str", ".symtab"].contains(&s.as_str())),
        "the installed binary is not stripped: {sections:?}"
    );
    assert!(
        shipped.len() < built.len() / 2,
        "{} bytes installed of {}",
        shipped.len(),
        built.len()
    );
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

/// Cargo.toml says `MIT OR Apache-2.0`: both texts ship with the source.
#[test]
fn both_license_texts_are_there() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains("license = \"MIT OR Apache-2.0\""));
    let mit = std::fs::read_to_string(root.join("LICENSE-MIT")).expect("LICENSE-MIT");
    assert!(mit.starts_with("MIT License") && mit.contains("Permission is hereby granted, free of charge"));
    let apache = std::fs::read_to_string(root.join("LICENSE-APACHE")).expect("LICENSE-APACHE");
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    assert!(apache.contains("END OF TERMS AND CONDITIONS"));
}
