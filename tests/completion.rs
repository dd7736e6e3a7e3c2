//! `kes completion bash|zsh|fish`: the scripts parse in their shells, offer every
//! command and flag of the CLI (bash and fish are driven as a user's shell would drive
//! them), and complete key names from a real server over mTLS — only when a server
//! variable is set, quickly and silently when the server cannot answer.

mod cli_support;
mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cli_support::CLIENT_VARS;
use common::{KES, Kes, Pki, run_kes};
use kes::cli::doc::completion::{Args, SHELLS, nodes};
use kes::cli::doc::tree;

/// Flags the parsers accept that the help leaves out on purpose, and so are not
/// offered: `-e/--enclave` of the 2023 CLI is accepted and ignored, and
/// `identity new --encrypt` is refused with an explanation (docs/cli.md).
const UNDOCUMENTED: &[&str] = &["enclave", "encrypt"];

fn script(shell: &str) -> String {
    let (code, out, err) = run_kes(&["completion", shell]);
    assert_eq!(code, 0, "kes completion {shell}: {err}");
    out
}

fn write_script(dir: &Path, shell: &str) -> PathBuf {
    let path = dir.join(format!("kes.{shell}"));
    std::fs::write(&path, script(shell)).unwrap();
    path
}

/// Whether `shell` is installed; CI (.ci/run) installs zsh and fish.
fn have(shell: &str) -> bool {
    let found = Command::new(shell)
        .args(["-c", "exit 0"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("{shell} is not installed: its checks are skipped here (CI installs it)");
    }
    found
}

/// The directory of the kes binary first on PATH, so that the scripts' `kes` is it.
fn path_with_kes() -> String {
    let dir = Path::new(KES).parent().unwrap();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs `shell -c program` with a clean client environment plus `env`.
fn shell(shell: &str, program: &str, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(shell);
    command
        .args(["-c", program])
        .env("PATH", path_with_kes())
        .stdin(Stdio::null());
    for var in CLIENT_VARS {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What bash offers for each command line (the cursor at its end), one list per line.
fn bash_complete(script: &Path, lines: &[String], env: &[(&str, &str)]) -> Vec<Vec<String>> {
    let mut program = format!("source {}\n", script.display());
    for line in lines {
        program.push_str(&format!(
            "COMP_LINE={}; COMP_POINT=${{#COMP_LINE}}; _kes; echo \"${{COMPREPLY[*]}}\"\n",
            shell_quote(line)
        ));
    }
    let out = shell("bash", &program, env);
    let text = String::from_utf8(out.stdout).unwrap();
    let lists: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(lists.len(), lines.len(), "{text}");
    lists
}

/// What fish offers for each command line, one list per command line.
fn fish_complete(script: &Path, lines: &[String], env: &[(&str, &str)]) -> Vec<Vec<String>> {
    let mut program = format!("source {}\n", script.display());
    for line in lines {
        program.push_str(&format!(
            "complete -C {}; echo '--end--'\n",
            shell_quote(line)
        ));
    }
    let out = shell("fish", &program, env);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lists = vec![Vec::new()];
    for line in text.lines() {
        if line == "--end--" {
            lists.push(Vec::new());
        } else {
            // "candidate<TAB>description"
            let candidate = line.split('\t').next().unwrap().to_owned();
            lists.last_mut().unwrap().push(candidate);
        }
    }
    lists.pop();
    assert_eq!(lists.len(), lines.len(), "{text}");
    lists
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[test]
fn scripts_parse_in_their_shells() {
    let dir = tempfile::tempdir().unwrap();
    for (name, check) in [("bash", "-n"), ("zsh", "-n"), ("fish", "--no-execute")] {
        if name != "bash" && !have(name) {
            continue;
        }
        let path = write_script(dir.path(), name);
        let out = Command::new(name).arg(check).arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{name} {check}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, _, err) = run_kes(&["completion", "tcsh"]);
    assert_eq!(code, 1);
    assert!(err.contains("use bash, zsh or fish"), "{err}");
}

#[test]
fn the_help_documents_every_flag_the_parsers_accept() {
    let root = tree::cli(kes::cli::dispatch);
    let mut checked = 0;
    for command in root.walk() {
        let Some(parser) = &command.parser_flags else {
            continue;
        };
        let documented = command.usage.flags();
        for flag in parser {
            if UNDOCUMENTED.contains(&flag.long) {
                continue;
            }
            let found = documented
                .iter()
                .any(|d| d.long.as_deref() == Some(flag.long) && d.short == flag.short);
            assert!(
                found,
                "'{} --help' does not document --{} (short {:?})",
                command.name(),
                flag.long,
                flag.short
            );
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} flags checked");
}

/// Every command line that must offer something, and what: the subcommands after each
/// command path, the flags after `-`.
fn expectations() -> Vec<(String, Vec<String>)> {
    let root = tree::cli(kes::cli::dispatch);
    let mut out = Vec::new();
    for node in nodes(&root) {
        let prefix = if node.path.is_empty() {
            "kes ".to_owned()
        } else {
            format!("kes {} ", node.path)
        };
        let children: Vec<String> = node
            .command
            .children
            .iter()
            .map(|c| c.path.last().unwrap().clone())
            .collect();
        if !children.is_empty() {
            out.push((prefix.clone(), children));
        }
        let mut flags = Vec::new();
        for flag in &node.flags {
            flags.extend(flag.short.map(|c| format!("-{c}")));
            flags.extend(flag.long.as_ref().map(|l| format!("--{l}")));
        }
        if !flags.is_empty() {
            out.push((format!("{prefix}-"), flags));
        }
    }
    out
}

fn assert_offers(shell: &str, expectations: &[(String, Vec<String>)], got: &[Vec<String>]) {
    for ((line, wanted), offered) in expectations.iter().zip(got) {
        for word in wanted {
            assert!(
                offered.contains(word),
                "{shell}: '{line}' does not offer {word}; offers {offered:?}"
            );
        }
    }
}

#[test]
fn bash_offers_every_command_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "bash");
    let expected = expectations();
    assert!(expected.len() > 40, "{expected:?}");
    let lines: Vec<String> = expected.iter().map(|(l, _)| l.clone()).collect();
    assert_offers("bash", &expected, &bash_complete(&script, &lines, &[]));

    // Aliases, flag values, and what is not offered.
    let cases: &[(&str, &[&str])] = &[
        (
            "kes key describe --",
            &["--insecure", "--json", "--color", "--help"],
        ),
        ("kes key list -k --c", &["--color"]),
        ("kes server --auth ", &["on", "off"]),
        ("kes server --auth=of", &["off"]),
        ("kes log trace --type e", &["error"]),
        ("kes completion ", &["bash", "zsh", "fish"]),
        ("kes tool identity new --time 720h --f", &["--force"]),
        ("kes key create ", &[]),
        ("kes key info ", &[]),
        ("kes status --color ", &[]),
    ];
    let lines: Vec<String> = cases.iter().map(|(l, _)| (*l).to_owned()).collect();
    for ((line, wanted), got) in cases.iter().zip(bash_complete(&script, &lines, &[])) {
        assert_eq!(&got, wanted, "bash: {line}");
    }
    // File names where a flag or argument takes a file.
    std::fs::write(dir.path().join("server-config.yml"), "").unwrap();
    let file = format!("kes server --config {}/server-c", dir.path().display());
    let got = bash_complete(&script, &[file], &[]);
    assert_eq!(
        got[0],
        [format!("{}/server-config.yml", dir.path().display())]
    );
}

#[test]
fn fish_offers_every_command_and_flag() {
    if !have("fish") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "fish");
    let expected = expectations();
    let lines: Vec<String> = expected.iter().map(|(l, _)| l.clone()).collect();
    assert_offers("fish", &expected, &fish_complete(&script, &lines, &[]));
    let cases: &[(&str, &[&str])] = &[
        (
            "kes key describe --",
            &["--insecure", "--json", "--color", "--help"],
        ),
        ("kes server --auth ", &["on", "off"]),
        ("kes log trace --type e", &["error"]),
        ("kes completion ", &["bash", "fish", "zsh"]),
        ("kes key info ", &[]),
    ];
    let lines: Vec<String> = cases.iter().map(|(l, _)| (*l).to_owned()).collect();
    for ((line, wanted), mut got) in cases.iter().zip(fish_complete(&script, &lines, &[])) {
        got.sort();
        let mut wanted: Vec<String> = wanted.iter().map(|w| (*w).to_owned()).collect();
        wanted.sort();
        assert_eq!(got, wanted, "fish: {line}");
    }
}

/// Drives an interactive zsh (in a pseudo-terminal, zsh/zpty) with the completion
/// system: types each line and a TAB, and records what reaches `compadd`.
const ZSH_DRIVER: &str = r#"
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT=; RPROMPT=; fpath=(${(q)1} \$fpath); autoload -U compinit; compinit -u -D 2>/dev/null"
zpty -w z 'compadd () { builtin compadd -O __hits "$@"; print -l -- "@@""@"${^__hits} >/dev/tty; builtin compadd "$@" }'
zpty -w z 'finish () { print "EN""D" >/dev/tty }; zle -N finish; bindkey "^Y" finish'
shift
local line
for request in "$@"; do
    zpty -n -w z "$request"$'\t\C-Y'
    integer n=0
    while zpty -r z line; do
        [[ $line == *END* ]] && break
        [[ $line == *@@@* ]] && print -r -- "${${line##*@@@}%%$'\r'}"
        (( n++ > 5000 )) && break
    done
    print -- --end--
    zpty -n -w z $'\C-E\C-U'
done
zpty -d z
"#;

/// What zsh offers for each command line, one sorted list per command line.
fn zsh_complete(dir: &Path, lines: &[String], env: &[(&str, &str)]) -> Vec<Vec<String>> {
    std::fs::write(dir.join("_kes"), script("zsh")).unwrap();
    let driver = dir.join("driver.zsh");
    std::fs::write(&driver, ZSH_DRIVER).unwrap();
    let mut program = format!(
        "timeout 120 zsh -f {} {}",
        driver.display(),
        shell_quote(&dir.display().to_string())
    );
    for line in lines {
        program.push(' ');
        program.push_str(&shell_quote(line));
    }
    let out = shell("sh", &program, env);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lists = vec![Vec::new()];
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "--end--" {
            lists.push(Vec::new());
        } else {
            lists.last_mut().unwrap().push(line.to_owned());
        }
    }
    lists.pop();
    for list in &mut lists {
        list.sort();
        list.dedup();
    }
    assert_eq!(lists.len(), lines.len(), "{text}");
    lists
}

#[test]
fn zsh_offers_every_command_and_flag() {
    if !have("zsh") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let expected = expectations();
    let lines: Vec<String> = expected.iter().map(|(l, _)| l.clone()).collect();
    assert_offers("zsh", &expected, &zsh_complete(dir.path(), &lines, &[]));
    let cases: &[(&str, &[&str])] = &[
        ("kes key describe --c", &["--color"]),
        ("kes server --auth ", &["off", "on"]),
        ("kes server --auth=", &["off", "on"]),
        ("kes log trace --type ", &["audit", "error", "metric"]),
        ("kes completion ", &["bash", "fish", "zsh"]),
        ("kes key info ", &[]),
    ];
    let lines: Vec<String> = cases.iter().map(|(l, _)| (*l).to_owned()).collect();
    for ((line, wanted), got) in cases.iter().zip(zsh_complete(dir.path(), &lines, &[])) {
        assert_eq!(&got, wanted, "zsh: {line}");
    }
    assert!(script("zsh").starts_with("#compdef kes\n"));
}

/// A kes server with keys `my-key`, `my-other` and `app-1`, and the environment of an
/// admin client of it (its CA trusted through KES_CAPATH).
struct KeyServer {
    _pki: Pki,
    kes: Kes,
    env: Vec<(&'static str, String)>,
}

fn key_server() -> KeyServer {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let config = pki.fs_config(&admin.identity, "");
    let kes = Kes::start(&pki, &config, &[]);
    let mut client = kes.client(&admin);
    for name in ["my-key", "my-other", "app-1"] {
        let resp = client.post(&format!("/v1/key/create/{name}"), b"");
        assert_eq!(resp.status, 200, "create {name}: {}", resp.text());
    }
    let env = vec![
        ("KES_SERVER", kes.addr.to_string()),
        ("KES_CLIENT_CERT", admin.cert_path.display().to_string()),
        ("KES_CLIENT_KEY", admin.key_path.display().to_string()),
        ("KES_CAPATH", pki.ca_path.display().to_string()),
    ];
    KeyServer {
        _pki: pki,
        kes,
        env,
    }
}

fn env_of(server: &KeyServer) -> Vec<(&str, &str)> {
    server.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn lookup(args: &[&str], env: &[(&str, &str)]) -> (String, Duration) {
    let mut command = Command::new(KES);
    command.args(["completion", "__complete-keys"]).args(args);
    for var in [
        "MINIO_KES_SERVER",
        "KES_SERVER",
        "MINIO_KMS_KES_ENDPOINT",
        "KES_API_KEY",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied()).stdin(Stdio::null());
    let started = Instant::now();
    let out = command.output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "exit {:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8(out.stdout).unwrap(), took)
}

#[test]
fn key_names_come_from_the_server_in_the_environment() {
    let server = key_server();
    let env = env_of(&server);
    let (names, _) = lookup(&["--", "my"], &env);
    assert_eq!(names, "my-key\nmy-other\n");
    let (names, _) = lookup(&[], &env);
    assert_eq!(names, "app-1\nmy-key\nmy-other\n");

    // Through bash, as a user types: the first argument of key commands.
    let dir = tempfile::tempdir().unwrap();
    let bash = write_script(dir.path(), "bash");
    let lines: Vec<String> = [
        "kes key info my",
        "kes key describe my-o",
        "kes key rm my-key ",
        "kes key encrypt my-key ",
        "kes key create my",
        "kes identity info my",
    ]
    .iter()
    .map(|l| (*l).to_owned())
    .collect();
    let got = bash_complete(&bash, &lines, &env);
    assert_eq!(got[0], ["my-key", "my-other"]);
    assert_eq!(got[1], ["my-other"]);
    assert_eq!(
        got[2],
        ["app-1", "my-key", "my-other"],
        "rm takes several names"
    );
    assert!(got[3].is_empty(), "encrypt's second argument is a message");
    assert!(got[4].is_empty(), "a new key's name is not looked up");
    assert!(got[5].is_empty(), "identities are not keys");

    // Without the CA the server is not trusted, unless the line has -k.
    let untrusted: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| *k != "KES_CAPATH")
        .copied()
        .collect();
    let lines = vec![
        "kes key info my".to_owned(),
        "kes key info -k my".to_owned(),
    ];
    let got = bash_complete(&bash, &lines, &untrusted);
    assert!(got[0].is_empty(), "{:?}", got[0]);
    assert_eq!(got[1], ["my-key", "my-other"]);

    // No server variable: nothing is asked, even with credentials and a server running.
    let no_server: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| *k != "KES_SERVER")
        .copied()
        .collect();
    let got = bash_complete(&bash, &["kes key info my".to_owned()], &no_server);
    assert!(got[0].is_empty());
    let (names, _) = lookup(&["my"], &no_server);
    assert_eq!(names, "");

    if have("zsh") {
        let zdir = tempfile::tempdir().unwrap();
        let lines = vec![
            "kes key info my".to_owned(),
            "kes key rm my-key ".to_owned(),
        ];
        let got = zsh_complete(zdir.path(), &lines, &env);
        assert_eq!(got[0], ["my-key", "my-other"]);
        assert_eq!(got[1], ["app-1", "my-key", "my-other"]);
        let got = zsh_complete(zdir.path(), &lines[..1], &no_server);
        assert!(got[0].is_empty(), "{:?}", got[0]);
    }
    if have("fish") {
        let fish = write_script(dir.path(), "fish");
        let lines = vec![
            "kes key info my".to_owned(),
            "kes key info -k my".to_owned(),
        ];
        let got = fish_complete(&fish, &lines, &env);
        assert_eq!(got[0], ["my-key", "my-other"]);
        let got = fish_complete(&fish, &lines[1..], &untrusted);
        assert_eq!(got[0], ["my-key", "my-other"]);
        let got = fish_complete(&fish, &lines[..1], &no_server);
        assert!(got[0].is_empty(), "{:?}", got[0]);
    }
    drop(server.kes);
}

#[test]
fn a_server_that_does_not_answer_costs_a_second_and_prints_nothing() {
    // Accepts connections (the kernel completes the handshake) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let env = [
        ("KES_SERVER", silent.local_addr().unwrap().to_string()),
        (
            "KES_API_KEY",
            "kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw".to_owned(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (names, took) = lookup(&["-k", "my"], &env);
    assert_eq!(names, "");
    assert!(took >= Duration::from_millis(900), "gave up after {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");

    // Nothing listening: at once.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let env = [("KES_SERVER", closed.as_str()), env[1]];
    let (names, took) = lookup(&["-k", "my"], &env);
    assert_eq!(names, "");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // No credentials: nothing, no error on the shell's terminal.
    let (names, _) = lookup(&["my"], &[("KES_SERVER", "127.0.0.1:1")]);
    assert_eq!(names, "");
    drop(silent);
}

#[test]
fn key_arguments_follow_the_synopsis() {
    let root = tree::cli(kes::cli::dispatch);
    let keyed: Vec<String> = nodes(&root)
        .into_iter()
        .filter(|n| matches!(n.args, Args::Keys { .. }))
        .map(|n| n.path)
        .collect();
    assert_eq!(
        keyed,
        [
            "key info",
            "key ls",
            "key rm",
            "key encrypt",
            "key decrypt",
            "key dek",
            "key rotate"
        ]
    );
}

/// The tree read from the help reaches the commands of every CLI generation.
#[test]
fn the_tree_reaches_every_generation() {
    let root = tree::cli(kes::cli::dispatch);
    assert!(root.help.is_some());
    let names: Vec<String> = root.walk().iter().map(|c| c.name()).collect();
    for expected in [
        "kes server",
        "kes key create",
        "kes key rotate",
        "kes policy show",
        "kes identity new",
        "kes tool identity of",
        "kes tool migrate",
        "kes keystore check",
        "kes completion",
    ] {
        assert!(
            names.contains(&expected.to_owned()),
            "{expected} missing: {names:?}"
        );
    }
    let key = root.child("key").unwrap();
    assert_eq!(key.child("describe").unwrap().name(), "kes key info");
    let create = key.child("create").unwrap();
    assert!(
        create
            .parser_flags
            .as_ref()
            .unwrap()
            .iter()
            .any(|f| f.long == "insecure")
    );
    assert!(root.child("update").unwrap().help.is_none());
}

/// A command's arguments complete as its synopsis says.
#[test]
fn arguments_from_synopsis() {
    let root = tree::cli(kes::cli::dispatch);
    let nodes = nodes(&root);
    let args = |path: &str| &nodes.iter().find(|n| n.path == path).unwrap().args;
    assert_eq!(args("key info"), &Args::Keys { every: false });
    assert_eq!(args("key rm"), &Args::Keys { every: true });
    assert_eq!(args("key ls"), &Args::Keys { every: false });
    assert_eq!(args("key create"), &Args::Nothing);
    assert_eq!(args("server"), &Args::Nothing);
    assert_eq!(args("identity of"), &Args::Files);
    assert_eq!(args("tool identity of"), &Args::Files);
    assert_eq!(
        args("completion"),
        &Args::Choices(SHELLS.iter().map(|s| (*s).to_owned()).collect())
    );
}
