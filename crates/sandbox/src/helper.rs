//! The helper process: lays out one container with hakoniwa and runs the code in it.
//!
//! The server starts it for every call (`berth __sandbox-helper`, or the crate's
//! `berth-sandbox-helper` binary) as an unprivileged user when the server runs as root, so
//! the sandbox's user namespace maps to that user and never to host root: root-owned files
//! stay out of reach even if a mount were made writable, and `RLIMIT_NPROC` (which the
//! kernel does not apply to root) holds. Being its own single-threaded process also keeps
//! hakoniwa's `fork` away from the server's threads, and gives the server one process group
//! to kill. The helper reads a [`Spec`] on stdin and writes one [`Report`] on stdout.

use crate::protocol::{CODE_DIR, Limits, Report, SANDBOX_GID, SANDBOX_UID, SCRATCH, Spec};
use hakoniwa::seccomp::{Action, ArgCmp, ArgCmpOp, Filter};
use hakoniwa::{Container, MountOptions, Namespace, Rlimit, Stdio};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The largest spec read from stdin (code is at most 256 KiB, escaped at most six-fold).
const MAX_SPEC_BYTES: u64 = 4 << 20;

/// Runs the helper: spec on stdin, report on stdout. Always exits 0 once it has answered.
pub fn main() -> ExitCode {
    let report = match read_spec() {
        Ok(spec) => run(&spec),
        Err(e) => Report::failed(e),
    };
    let mut out = std::io::stdout().lock();
    match serde_json::to_writer(&mut out, &report).map(|()| out.flush()) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn read_spec() -> Result<Spec, String> {
    let mut text = Vec::new();
    std::io::stdin()
        .take(MAX_SPEC_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read the spec: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("bad spec: {e}"))
}

/// The container: fresh user, PID, mount, network, IPC, UTS and cgroup namespaces; a
/// read-only root holding only the system directories, the code and a few `/etc` files;
/// a size-capped tmpfs as the only writable place; rlimits; a seccomp deny list.
fn container(spec: &Spec) -> Container {
    let mut c = Container::new(); // mount, user and PID namespaces, and a fresh /proc
    c.unshare(Namespace::Network)
        .unshare(Namespace::Ipc)
        .unshare(Namespace::Uts)
        .unshare(Namespace::Cgroup)
        .hostname("sandbox")
        .rootdir(&spec.root);
    // One id each way: the sandbox user is this (unprivileged) helper's user outside.
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    c.uidmaps(&[(SANDBOX_UID, uid, 1)]);
    c.gidmaps(&[(SANDBOX_GID, gid, 1)]);
    for path in &spec.read_only {
        let Some(target) = path.to_str() else {
            continue;
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(to) = std::fs::read_link(path)
                    && let Some(to) = to.to_str()
                {
                    c.symlink(to, target);
                }
            }
            Ok(_) => {
                c.bindmount_ro(target, target);
            }
            Err(_) => {}
        }
    }
    // A few device nodes bound from the host into the read-only root (a devfs tmpfs would
    // be a second, unbounded writable place).
    for dev in ["null", "zero", "full", "random", "urandom"] {
        let path = format!("/dev/{dev}");
        c.bindmount_rw(&path, &path);
    }
    for (fd, name) in ["stdin", "stdout", "stderr"].iter().enumerate() {
        c.symlink(&format!("/proc/self/fd/{fd}"), &format!("/dev/{name}"));
    }
    c.symlink("/proc/self/fd", "/dev/fd");
    let scratch = format!("size={},mode=0700", spec.limits.scratch_bytes);
    c.mount(
        "tmpfs",
        SCRATCH,
        "tmpfs",
        MountOptions::NOSUID | MountOptions::NODEV,
        Some(scratch),
    );
    c.dir("/etc", 0o755)
        .file(
            "/etc/passwd",
            &format!("sandbox:x:{SANDBOX_UID}:{SANDBOX_GID}:sandbox:{SCRATCH}:/bin/sh\n"),
        )
        .file("/etc/group", &format!("sandbox:x:{SANDBOX_GID}:\n"))
        .file("/etc/hosts", "127.0.0.1 localhost sandbox\n::1 localhost\n")
        .dir(CODE_DIR, 0o755)
        .file(&format!("{CODE_DIR}/{}", spec.file_name), &spec.code);
    limits(&mut c, &spec.limits);
    c.seccomp_filter(seccomp());
    c
}

fn limits(c: &mut Container, l: &Limits) {
    for (r, v) in [
        (Rlimit::As, l.memory_bytes),
        (Rlimit::Nproc, l.max_processes),
        (Rlimit::Fsize, l.max_file_bytes),
        (Rlimit::Nofile, l.max_open_files),
        (Rlimit::Core, 0),
        (Rlimit::Memlock, 0),
        (Rlimit::Msgqueue, 0),
    ] {
        c.setrlimit(r, v, v);
    }
    // SIGXCPU at the soft limit, SIGKILL one second later.
    c.setrlimit(Rlimit::Cpu, l.cpu_seconds, l.cpu_seconds + 1);
}

/// Syscalls refused with `EPERM`: leaving or reshaping the namespaces, mounting, tracing
/// other processes, loading kernel code, the kernel keyring, BPF, perf, io_uring,
/// userfaultfd, clocks, swap, reboot. Everything else is allowed so that ordinary Python
/// and shell code runs. `clone3` answers `ENOSYS` (its flags live in memory a filter cannot
/// read), so the C library falls back to `clone`, whose namespace flags are refused.
fn seccomp() -> Filter {
    const EPERM: i32 = 1;
    const ENOSYS: i32 = 38;
    const DENIED: &[&str] = &[
        "unshare",
        "setns",
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "chroot",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "process_madvise",
        "pidfd_getfd",
        "kcmp",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "userfaultfd",
        "open_by_handle_at",
        "name_to_handle_at",
        "fanotify_init",
        "lookup_dcookie",
        "iopl",
        "ioperm",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "sethostname",
        "setdomainname",
        "swapon",
        "swapoff",
        "reboot",
        "acct",
        "quotactl",
        "quotactl_fd",
        "syslog",
        "vhangup",
        "nfsservctl",
        "uselib",
    ];
    // CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER,
    // CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWTIME.
    const NEW_NAMESPACE_FLAGS: [u64; 8] = [
        0x0002_0000,
        0x0200_0000,
        0x0400_0000,
        0x0800_0000,
        0x1000_0000,
        0x2000_0000,
        0x4000_0000,
        0x0000_0080,
    ];
    let mut f = Filter::new(Action::Allow);
    for name in DENIED {
        f.add_rule(Action::Errno(EPERM), name);
    }
    for flag in NEW_NAMESPACE_FLAGS {
        f.add_rule_conditional(
            Action::Errno(EPERM),
            "clone",
            &[ArgCmp::new(0, ArgCmpOp::MaskedEq, flag, flag)],
        );
    }
    f.add_rule(Action::Errno(ENOSYS), "clone3");
    f
}

fn run(spec: &Spec) -> Report {
    let c = container(spec);
    let program = format!("{CODE_DIR}/{}", spec.file_name);
    let mut cmd = c.command(&spec.program);
    cmd.arg(&program)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", SCRATCH)
        .env("TMPDIR", SCRATCH)
        .env("USER", "sandbox")
        .env("LANG", "C.UTF-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .current_dir(SCRATCH);
    let null = match std::fs::File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => return Report::failed(format!("cannot open /dev/null: {e}")),
    };
    cmd.stdin(Stdio::from(null))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Report::failed(format!("cannot start the container: {e}")),
    };
    let cap = usize::try_from(spec.limits.max_output_bytes).unwrap_or(usize::MAX);
    let out = child.stdout.take().map(|r| drain_in_thread(r, cap));
    let err = child.stderr.take().map(|r| drain_in_thread(r, cap));

    // Wait without reaping (WNOWAIT), so the pid stays ours to kill until `wait` below.
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
        let _ = tx.send(());
    });
    let timeout = Duration::from_millis(spec.timeout_ms);
    let mut timed_out = false;
    if rx.recv_timeout(timeout).is_err() {
        timed_out = true;
        // Killing the namespace's init makes the kernel kill every process in it before
        // the init is gone; the container's outer process then reaps it and exits.
        for init in children(pid) {
            let _ = kill(init, Signal::SIGKILL);
        }
        if rx.recv_timeout(Duration::from_secs(2)).is_err() {
            let _ = child.kill();
        }
    }
    let status = child.wait();
    let (stdout, out_cut) = join(out);
    let (stderr, err_cut) = join(err);
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let status = match status {
        Ok(s) => s,
        Err(e) => return Report::failed(format!("lost the container: {e}")),
    };
    // The container's init could not exec the interpreter (missing, not executable): its
    // own message, not the code's result.
    if !timed_out && status.exit_code == Some(125) && stderr.starts_with(b"hakoniwa: ") {
        return Report::failed(String::from_utf8_lossy(&stderr).trim().to_owned());
    }
    let exit_code = if timed_out {
        None
    } else if let Some(code) = status.exit_code {
        Some(code)
    } else if status.code > 128 && status.reason.contains("received signal") {
        Some(status.code)
    } else {
        // hakoniwa's own failure (code 125): the container could not be set up.
        return Report::failed(status.reason);
    };
    Report {
        error: None,
        exit_code,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        duration_ms,
        timed_out,
        truncated: out_cut || err_cut,
    }
}

/// The children of `pid` (the container's init is the only one).
fn children(pid: Pid) -> Vec<Pid> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .map(Pid::from_raw)
        .collect()
}

type Drained = std::thread::JoinHandle<(Vec<u8>, bool)>;

/// Reads a pipe to its end, keeping the first `cap` bytes: memory stays bounded however
/// much is written, and the writer is never blocked on a full pipe.
fn drain_in_thread(mut r: impl Read + Send + 'static, cap: usize) -> Drained {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut cut = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = cap.saturating_sub(kept.len());
                    if n > room {
                        cut = true;
                    }
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        (kept, cut)
    })
}

fn join(h: Option<Drained>) -> (Vec<u8>, bool) {
    h.and_then(|h| h.join().ok()).unwrap_or_default()
}
