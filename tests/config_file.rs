//! The shipped sample configuration loads, its commented defaults are the real
//! defaults, and the command line validates files.

use std::process::Command;
use std::time::Duration;

use turnd::config::Config;

#[test]
fn sample_config_loads_and_matches_defaults() {
    let c = Config::load(std::path::Path::new("conf/turnd.toml")).expect("conf/turnd.toml is valid");
    let d = Config::default();
    assert_eq!(c.realm, d.realm);
    assert_eq!(c.relay.min_port, 49152);
    assert_eq!(c.relay.max_port, 65535);
    assert_eq!(c.relay.default_lifetime, Duration::from_secs(600));
    assert_eq!(c.relay.max_lifetime, Duration::from_secs(3600));
    assert_eq!(c.auth.nonce_lifetime, Duration::from_secs(600));
    assert_eq!(c.relay.max_allocations_per_user, d.relay.max_allocations_per_user);
    // Every commented key, uncommented, is still a valid config.
    let text = std::fs::read_to_string("conf/turnd.toml").expect("read");
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") || rest.starts_with('[') => rest.split("   #").next().unwrap_or(rest),
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    // stun.other-address pairs with a UDP listener on a specific address.
    let uncommented = uncommented + "[[listener]]\naddress = \"203.0.113.10\"\nport = 3478\n";
    let all = Config::parse(&uncommented, "uncommented").expect("every documented key parses");
    assert_eq!(all.auth.users.len(), 2);
    assert_eq!(all.listener.as_ref().map(|l| l.len()), Some(7));
    assert_eq!(all.stun_pairs().len(), 1);
    // The sample as shipped: UDP 3478 and `auto` on 443, both families.
    let kinds: Vec<_> = c.listeners().0.into_iter().map(|(a, t)| (a.to_string(), t)).collect();
    use turnd::config::ListenTransport::{Auto, Udp};
    assert_eq!(
        kinds,
        [
            ("0.0.0.0:3478".to_string(), Udp),
            ("[::]:3478".to_string(), Udp),
            ("0.0.0.0:443".to_string(), Auto),
            ("[::]:443".to_string(), Auto),
        ]
    );
}

fn turnd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(args)
        .output()
        .expect("turnd runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_config_exit_codes_and_messages() {
    let dir = tempfile::tempdir().expect("tmp");
    let (code, out) = turnd(&["check-config", "conf/turnd.toml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("xdp off (socket path)"), "{out}");
    // What [xdp] would do, without loading anything: a named interface
    // that does not exist cannot forward.
    let xdp = dir.path().join("xdp.toml");
    std::fs::write(
        &xdp,
        "[[listener]]\naddress = \"127.0.0.1\"\nport = 3478\n[xdp]\nmode = \"auto\"\ninterfaces = [\"nosuch0\"]\n",
    )
    .expect("write");
    let (code, out) = turnd(&["check-config", xdp.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("xdp auto on [nosuch0]: would fall back to the socket path")
            && out.contains("net.ipv4.conf.nosuch0.forwarding=1"),
        "{out}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[relay]\nmax-lifetime = \"sometimes\"\n").expect("write");
    let (code, out) = turnd(&["check-config", bad.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(out.contains("bad.toml") && out.contains("relay.max-lifetime"), "{out}");
    std::fs::write(&bad, "[auth]\nstatic-auth-secret-files = [\"/nonexistent/secret\"]\n").expect("write");
    let (code, out) = turnd(&["check-config", bad.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(
        out.contains("auth.static-auth-secret-files") && out.contains("/nonexistent/secret"),
        "{out}"
    );
    // `serve` refuses to start on a bad file, naming it.
    let (code, out) = turnd(&["--config", bad.to_str().expect("utf8")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.toml"), "{out}");
}

#[test]
fn credentials_command_mints_from_the_configured_secret() {
    let dir = tempfile::tempdir().expect("tmp");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "north\n").expect("write");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "realm = \"r\"\npublic-host = \"turn.example.org\"\n[auth]\nstatic-auth-secret-files = [{:?}]\n",
            secret
        ),
    )
    .expect("write");
    let (code, out) = turnd(&[
        "credentials",
        "--user",
        "alice",
        "--ttl",
        "12h",
        "--config",
        cfg.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{out}");
    let username = out
        .lines()
        .find_map(|l| l.strip_prefix("username: "))
        .expect("username line");
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("password line");
    let (expiry, user) = username.split_once(':').expect("expiry:user");
    assert_eq!(user, "alice");
    let ttl = expiry.parse::<u64>().expect("number") as i64 - turnd::serve::unix_now() as i64;
    assert!((12 * 3600 - 5..=12 * 3600).contains(&ttl), "ttl {ttl}");
    assert_eq!(password, turnd::auth::rest_password(b"north", username));
    let json_start = out.find('{').expect("json");
    let v: serde_json::Value = serde_json::from_str(&out[json_start..]).expect("valid JSON");
    assert_eq!(v["iceServers"][0]["urls"][0], "stun:turn.example.org:3478");
    assert_eq!(v["iceServers"][1]["username"], username);
    assert_eq!(
        v["iceServers"][1]["urls"][0],
        "turn:turn.example.org:3478?transport=udp"
    );
}

/// A new user's file with several mistakes: `check-config` names every one
/// at once, each with the file, line, key and value, and reads the files
/// the configuration names (a missing admin token file fails the check,
/// not the start).
#[test]
fn check_config_reports_every_problem_with_line_and_value() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.toml");
    let short = dir.path().join("fleet-token");
    std::fs::write(&short, "too-short\n").expect("write");
    let short = short.to_str().expect("utf8");
    std::fs::write(
        &bad,
        format!(
            "realm = \"r\"\n\n[relay]\nmin-port = 6000\nmax-port = 5000\n\n[peers]\nallow = [\"10.8.0.0/33\"]\n\n\
         [admin]\nlisten = [\"127.0.0.1:9479\"]\ntoken-file = \"/nonexistent/admin-token\"\n\n\
         [cluster]\nnodes = [\"http://127.0.0.2:8080\"]\ntoken-file = \"{short}\"\n"
        ),
    )
    .expect("write");
    let file = bad.to_str().expect("utf8");
    let (code, out) = turnd(&["check-config", file]);
    assert_eq!(code, 1, "{out}");
    for want in [
        format!("{file}:5: key `relay.max-port` = 5000:"),
        format!("{file}:8: key `peers.allow[0]` = \"10.8.0.0/33\":"),
        format!("{file}:12: key `admin.token-file` = \"/nonexistent/admin-token\": cannot read"),
        format!("{file}:16: key `cluster.token-file` = \"{short}\": the token in it must be at least 16 characters"),
    ] {
        assert!(out.lines().any(|l| l.starts_with(&want)), "missing {want:?} in:\n{out}");
    }
    // -c/--config is not an option of check-config or probe (it did
    // nothing there).
    for sub in ["check-config", "probe"] {
        let (_, help) = turnd(&[sub, "--help"]);
        assert!(!help.contains("--config"), "{sub} --help: {help}");
    }
    let (_, help) = turnd(&["credentials", "--help"]);
    assert!(help.contains("--config"), "{help}");
}

/// `turnd credentials` before turnd ever ran: the secret is generated where
/// turnd will look for it, and turnd then accepts what was minted.
#[test]
fn credentials_before_the_first_run_generate_the_secret() {
    let home = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(["credentials", "--user", "first"])
        .env("HOME", home.path())
        .env_remove("XDG_STATE_HOME")
        .env_remove("STATE_DIRECTORY")
        .output()
        .expect("turnd runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let secret_file = home.path().join(".local/state/turnd/secret");
    assert!(text.contains("generated the shared secret in"), "{text}");
    let secret = std::fs::read_to_string(&secret_file).expect("generated secret");
    let username = text
        .lines()
        .find_map(|l| l.strip_prefix("username: "))
        .expect("username");
    let password = text
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("password");
    assert_eq!(password, turnd::auth::rest_password(secret.trim().as_bytes(), username));
}

#[test]
fn environment_variables_fill_in_values() {
    use turnd::config::expand_env;
    let env = |k: &str| match k {
        "TURND_PUBLIC_IP" => Some("203.0.113.7".to_string()),
        "NODE_NAME" => Some("worker-2".to_string()),
        _ => None,
    };
    let text = "public-host = \"${TURND_PUBLIC_IP}\"\n[cluster]\nname = \"turn-${NODE_NAME}\"\n";
    let out = expand_env(text, env).expect("expands");
    assert_eq!(
        out,
        "public-host = \"203.0.113.7\"\n[cluster]\nname = \"turn-worker-2\"\n"
    );
    // Not a reference: left as written.
    for literal in [
        "a = \"$HOME\"",
        "a = \"${lower}\"",
        "a = \"${1X}\"",
        "a = \"${UNCLOSED\"",
        "a = \"${}\"",
    ] {
        assert_eq!(expand_env(literal, env).expect("no reference"), literal);
    }
    let commented = "# public-host = \"${MISSING_VAR}\"\n  # ${ALSO_MISSING}\n";
    assert_eq!(expand_env(commented, env).expect("comments stay"), commented);
    let e = expand_env("realm = \"x\"\n\npublic-host = \"${MISSING_VAR}\"\n", env).expect_err("unset");
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("MISSING_VAR is not set"), "{}", e.message);
    // Through the loader: the error names the file.
    let err = turnd::config::Config::parse("public-host = \"${TURND_TEST_SURELY_UNSET}\"\n", "t.toml")
        .expect_err("unset variable");
    assert!(format!("{err}").contains("TURND_TEST_SURELY_UNSET is not set"), "{err}");
}
