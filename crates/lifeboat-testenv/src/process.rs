//! Child processes that cannot outlive the test process.
//!
//! Each binary runs under a small `sh` watchdog that holds a pipe from us on its standard input:
//! when this process ends in any way (a test panics, the harness is killed with SIGKILL), the pipe
//! closes, `read` returns and the watchdog stops the child, then removes its scratch directory.
//! This needs no `unsafe` (no `prctl(PR_SET_PDEATHSIG)` in a `pre_exec` hook) and also covers the
//! shared, never-dropped control plane of a test binary.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::Error;

const WATCHDOG: &str = r#"
exec 3<&0
"$@" &
child=$!
# The reader waits for our pipe to close (explicit fd: background jobs get /dev/null as stdin).
( read -r _ <&3; kill -TERM "$child" 2>/dev/null; sleep 2; kill -KILL "$child" 2>/dev/null ) &
reader=$!
exec 3<&-
wait "$child"
status=$?
kill "$reader" 2>/dev/null
[ -n "${LIFEBOAT_TESTENV_CLEANUP:-}" ] && rm -rf "$LIFEBOAT_TESTENV_CLEANUP"
exit "$status"
"#;

/// A supervised child process; stopping it (or dropping it) stops the program and waits for it.
pub struct Supervised {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    /// How it was started, to start it again after [`Supervised::stop`] (fault tests).
    program: PathBuf,
    args: Vec<String>,
    cleanup: Option<PathBuf>,
}

impl Supervised {
    /// Starts `program` with `args`, its output going to `<log_dir>/<name>.log`; `cleanup` is a
    /// directory removed once the program has stopped.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
        cleanup: Option<&Path>,
    ) -> Result<Self, Error> {
        let log = log_dir.join(format!("{name}.log"));
        let (child, stdin) = launch(program, args, &log, cleanup)?;
        Ok(Self {
            name: name.to_owned(),
            child,
            stdin,
            log,
            program: program.to_path_buf(),
            args: args.to_vec(),
            cleanup: cleanup.map(Path::to_path_buf),
        })
    }

    /// Starts the program again, as it was first started, once it has been stopped; its log goes
    /// on in the same file.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        let (child, stdin) = launch(
            &self.program,
            &self.args,
            &self.log,
            self.cleanup.as_deref(),
        )?;
        self.child = child;
        self.stdin = stdin;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the watchdog (and so the program) has exited.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The last lines of the program's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            all[start..].join("\n")
        )
    }

    /// Stops the program (TERM, then KILL after two seconds) and waits for it.
    pub fn stop(&mut self) {
        // Closing the pipe is the signal to the watchdog.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

fn launch(
    program: &Path,
    args: &[String],
    log: &Path,
    cleanup: Option<&Path>,
) -> Result<(Child, Option<ChildStdin>), Error> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::Io(log.display().to_string(), e))?;
    let err = out
        .try_clone()
        .map_err(|e| Error::Io(log.display().to_string(), e))?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WATCHDOG)
        .arg("lifeboat-testenv-watchdog")
        .arg(program)
        .args(args);
    cmd.stdin(Stdio::piped()).stdout(out).stderr(err);
    match cleanup {
        Some(dir) => cmd.env("LIFEBOAT_TESTENV_CLEANUP", dir),
        None => cmd.env_remove("LIFEBOAT_TESTENV_CLEANUP"),
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Io(program.display().to_string(), e))?;
    let stdin = child.stdin.take();
    Ok((child, stdin))
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}
