//! Running child processes with errors that name the command.
//!
//! Every child gets the same environment fix-ups (see [`command`]) so that a
//! fresh shell, CI and `cargo xtask` all see the same tools.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

/// How many lines of a failed command's stderr an error shows.
const STDERR_TAIL_LINES: usize = 20;

/// A child process that ran and failed. `main` looks for it in the error
/// chain to exit with the child's own status (e.g. 101 from `cargo test`).
#[derive(Debug)]
pub struct CommandFailed {
    pub command: String,
    pub status: ExitStatus,
    /// The end of its stderr, when it was captured.
    pub stderr_tail: Option<String>,
}

impl CommandFailed {
    /// The exit code to hand on: the child's own, or 128+signal like a shell.
    pub fn exit_code(&self) -> u8 {
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => u8::try_from(code).unwrap_or(1).max(1),
            (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
            (None, None) => 1,
        }
    }
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.command, describe(self.status))?;
        match self.stderr_tail.as_deref() {
            Some(tail) if !tail.trim().is_empty() => {
                write!(f, "; the end of its stderr:\n{}", tail.trim_end())
            }
            Some(_) => write!(f, " (its stderr was empty)"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for CommandFailed {}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("failed ({status})"),
    }
}

/// The workspace root: xtask lives in `<root>/xtask`.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest directory has a parent")
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`): where rustup and
/// `cargo install` put their binaries, bpf-linker among them.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(home.join("bin"))
}

/// PATH for children: the cargo bin directory first, so that a fresh root
/// shell (whose PATH often lacks it) finds rustup and the bpf-linker we
/// install, and so that ours wins over any other bpf-linker.
fn child_path() -> OsString {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let Some(bin) = cargo_bin_dir() else {
        return current;
    };
    let rest = std::env::split_paths(&current).filter(|p| *p != bin);
    std::env::join_paths(std::iter::once(bin.clone()).chain(rest)).unwrap_or(current)
}

/// A command run from the workspace root with the PATH above. Rustup's
/// `RUSTUP_TOOLCHAIN` (set because xtask itself runs under `cargo run` on the
/// default toolchain) is removed so it cannot leak the default toolchain into
/// the pinned build; `cargo +<ver>` sets its own.
pub fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root())
        .env("PATH", child_path())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTUP_TOOLCHAIN_SOURCE");
    cmd
}

/// The command as a shell-like line, with the variables we set (except PATH)
/// in front: `LLVM_PREFIX=/usr/lib/llvm-22 cargo +1.98.0 install ...`.
pub fn display(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(k, v)| {
        let v = v?; // removals are not shown
        (k != "PATH").then(|| format!("{}={}", k.to_string_lossy(), quote(&v.to_string_lossy())))
    });
    let words = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|w| quote(&w.to_string_lossy()));
    envs.chain(words).collect::<Vec<_>>().join(" ")
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+=./:,@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn spawn_error(cmd: &Command, err: io::Error) -> anyhow::Error {
    let hint = if err.kind() == io::ErrorKind::NotFound {
        " (program not found in PATH)"
    } else {
        ""
    };
    anyhow::anyhow!("could not start `{}`: {err}{hint}", display(cmd))
}

/// Runs with output captured (for setup steps, which print one line each);
/// on failure the error carries the tail of stderr.
pub fn run_captured(cmd: &mut Command) -> anyhow::Result<Output> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(cmd, e))?;
    if output.status.success() {
        return Ok(output);
    }
    // Some tools (cargo install's compiler errors, apt's E: lines) write to
    // stderr; if a tool said nothing there, its stdout is the next best.
    let text = if output.stderr.iter().all(u8::is_ascii_whitespace) {
        &output.stdout
    } else {
        &output.stderr
    };
    Err(CommandFailed {
        command: display(cmd),
        status: output.status,
        stderr_tail: Some(tail(&String::from_utf8_lossy(text), STDERR_TAIL_LINES)),
    }
    .into())
}

/// Runs with the terminal's stdio (builds, tests, the demo): the user sees
/// everything as it happens.
pub fn run_inherited(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().map_err(|e| spawn_error(cmd, e))?;
    check(cmd, status)
}

/// Runs with stdout piped through us: every byte is echoed as it arrives and
/// every complete line is also handed to `on_line` (used to summarise test
/// results). Stderr stays on the terminal.
pub fn run_teed(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> anyhow::Result<()> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(cmd, e))?;
    let mut pipe = child.stdout.take().expect("stdout was piped");
    let relayed = tee(&mut pipe, &mut io::stdout(), &mut on_line);
    // Reap the child even if relaying failed.
    let status = child
        .wait()
        .map_err(|e| anyhow::anyhow!("waiting for `{}`: {e}", display(cmd)))?;
    relayed.map_err(|e| anyhow::anyhow!("relaying the output of `{}`: {e}", display(cmd)))?;
    check(cmd, status)
}

/// Copies `from` to `to` as bytes arrive (so partial lines such as
/// "test foo ... " show up at once) and hands each complete line to
/// `on_line`.
fn tee(
    from: &mut impl Read,
    to: &mut impl Write,
    on_line: &mut impl FnMut(&str),
) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    let mut line = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // A closed terminal must not stop the child: ignore write errors.
        let _ = to.write_all(&buf[..n]).and_then(|()| to.flush());
        for &b in &buf[..n] {
            if b == b'\n' {
                on_line(String::from_utf8_lossy(&line).trim_end_matches('\r'));
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        on_line(&String::from_utf8_lossy(&line));
    }
    Ok(())
}

fn check(cmd: &Command, status: ExitStatus) -> anyhow::Result<()> {
    if status.success() {
        Ok(())
    } else {
        Err(CommandFailed {
            command: display(cmd),
            status,
            stderr_tail: None,
        }
        .into())
    }
}

/// The last `n` non-empty-trailing lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_status_and_stderr_tail() {
        let mut cmd = command("sh");
        cmd.args([
            "-c",
            "for i in $(seq 1 30); do echo line$i >&2; done; exit 3",
        ]);
        let err = run_captured(&mut cmd).unwrap_err();
        let failed = err
            .downcast_ref::<CommandFailed>()
            .expect("a CommandFailed");
        assert_eq!(failed.exit_code(), 3);
        let text = err.to_string();
        assert!(text.starts_with("`sh -c 'for i in"), "{text}");
        assert!(text.contains("exited with status 3"), "{text}");
        assert!(text.contains("line30") && text.contains("line11"), "{text}");
        assert!(!text.contains("line10\n"), "only the tail: {text}");
    }

    #[test]
    fn stdout_is_used_when_stderr_is_empty() {
        let mut cmd = command("sh");
        cmd.args(["-c", "echo only-on-stdout; exit 1"]);
        let text = run_captured(&mut cmd).unwrap_err().to_string();
        assert!(text.contains("only-on-stdout"), "{text}");
    }

    #[test]
    fn missing_program_is_named() {
        let mut cmd = command("vxdp-no-such-program");
        cmd.arg("--version");
        let text = run_captured(&mut cmd).unwrap_err().to_string();
        assert!(text.contains("`vxdp-no-such-program --version`"), "{text}");
        assert!(text.contains("not found"), "{text}");
    }

    #[test]
    fn signal_exit_code_is_128_plus_signal() {
        let mut cmd = command("sh");
        cmd.args(["-c", "kill -9 $$"]);
        let err = run_inherited(&mut cmd).unwrap_err();
        let failed = err.downcast_ref::<CommandFailed>().unwrap();
        assert_eq!(failed.exit_code(), 137);
        assert!(err.to_string().contains("killed by signal 9"));
    }

    #[test]
    fn tee_copies_bytes_and_splits_lines() {
        let mut from: &[u8] = b"a\r\nb\nc";
        let mut to = Vec::new();
        let mut lines = Vec::new();
        tee(&mut from, &mut to, &mut |l: &str| lines.push(l.to_owned())).unwrap();
        assert_eq!(to, b"a\r\nb\nc");
        assert_eq!(lines, ["a", "b", "c"]);
    }

    #[test]
    fn display_shows_set_variables_and_quotes() {
        let mut cmd = command("cargo");
        cmd.env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args(["+1.98.0", "a b", "it's"]);
        assert_eq!(
            display(&cmd),
            r"LLVM_PREFIX=/usr/lib/llvm-22 cargo +1.98.0 'a b' 'it'\''s'"
        );
    }

    #[test]
    fn cargo_bin_comes_first_in_path() {
        let path = child_path();
        let first = std::env::split_paths(&path).next();
        assert_eq!(first, cargo_bin_dir());
    }
}
