//! `unionfuse run` end to end on a busybox-static rootfs built per test: exit codes, signals,
//! reaping, init files, /proc /dev /sys, isolation from the host, where writes land, -v, --net
//! none, -t, rootless (setpriv to uid 65534) and teardown (no mount, no temp dir left).
//! Needs root and /dev/fuse: under CI=true their absence is a failure, elsewhere a skip.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::skip_or_fail_in_ci;

const BIN: &str = env!("CARGO_BIN_EXE_unionfuse");
const TIMEOUT: Duration = Duration::from_secs(30);

fn busybox() -> Option<PathBuf> {
    let find = || {
        ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    };
    if find().is_none() && common::sys::is_root() {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "busybox-static"])
            .stdout(Stdio::null())
            .status();
    }
    find()
}

/// Root, /dev/fuse and busybox, or a reason.
fn require() -> Option<PathBuf> {
    if !common::require_fuse() {
        return None;
    }
    match busybox() {
        Some(b) => Some(b),
        None => {
            skip_or_fail_in_ci("busybox-static is not installed");
            None
        }
    }
}

/// One test's world: a busybox rootfs (the lower), a private TMPDIR for `run`, scratch space.
/// Dropping it checks nothing was left mounted and removes everything.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new(busybox: &Path) -> World {
        let dir = tempfile::Builder::new()
            .prefix("uf-runtime-")
            .tempdir()
            .expect("tempdir");
        // Readable (and traversable) by the unprivileged user of the rootless tests.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let w = World { dir };
        let root = w.lower();
        for d in ["bin", "etc", "tmp", "root", "home/alice"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod tmp");
        std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
        let list = Command::new(busybox)
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:A:/home/alice:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(
            root.join("etc/group"),
            "root:x:0:\nalice:x:1000:\nwheel:x:10:alice\nnogroup:x:65534:\n",
        )
        .expect("group");
        std::fs::write(root.join("etc/motd"), "lower motd\n").expect("motd");
        // As images do: the init files' mount targets exist (a rootless container root cannot
        // create them in a directory owned by the host's root).
        for f in ["hosts", "hostname", "resolv.conf"] {
            std::fs::write(root.join("etc").join(f), "").expect("init file");
        }
        std::fs::create_dir_all(w.tmp()).expect("tmp");
        w
    }

    fn lower(&self) -> PathBuf {
        self.dir.path().join("lower")
    }
    /// The TMPDIR `run` gets: its run directory must be gone after each run.
    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cmd(&self, flags: &[&str], script: &str) -> Command {
        let mut c = Command::new(BIN);
        c.arg("run")
            .args(flags)
            .arg(self.lower())
            .args(["--", "sh", "-c", script])
            .env("TMPDIR", self.tmp())
            .stdin(Stdio::null());
        c
    }

    /// Run to completion and check teardown.
    fn run(&self, flags: &[&str], script: &str) -> Output {
        let out = wait_output(
            self.cmd(flags, script)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn unionfuse run"),
        );
        self.assert_torn_down();
        out
    }

    fn assert_torn_down(&self) {
        let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
        let base = self.dir.path().to_string_lossy().into_owned();
        let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&base)).collect();
        assert!(leaked.is_empty(), "mounts left behind: {leaked:#?}");
        let left: Vec<_> = std::fs::read_dir(self.tmp())
            .expect("read tmp")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "temporary files left behind: {left:?}");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // After a failed test: never leave a mount under our directory (deepest first).
        if let Ok(m) = std::fs::read_to_string("/proc/mounts") {
            let base = self.dir.path().to_string_lossy().into_owned();
            let mut mine: Vec<&str> = m
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|p| p.starts_with(&base))
                .collect();
            mine.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in mine {
                let _ = Command::new("umount").args(["-l", p]).status();
            }
        }
    }
}

/// Wait with a deadline (a hung container must not eat the CI budget), collecting output.
fn wait_output(mut child: Child) -> Output {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut v);
        }
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unionfuse run did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(o)
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited (not killed)")
}

/// Every entry under `root`: type, mode, owner, size, content or link target.
fn tree_hash(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let md = std::fs::symlink_metadata(&p).expect("lstat");
            let body = if md.is_dir() {
                stack.push(p.clone());
                String::new()
            } else if md.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .expect("readlink")
                    .display()
                    .to_string()
            } else {
                let data = std::fs::read(&p).expect("read");
                format!("{:x}", common::content_hash(&data))
            };
            let key = p.strip_prefix(root).expect("prefix").to_path_buf();
            out.insert(
                key,
                format!(
                    "{:o} {}:{} {} {body}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.len()
                ),
            );
        }
    }
    out
}

macro_rules! world {
    () => {
        match require() {
            Some(b) => World::new(&b),
            None => return,
        }
    };
}

#[test]
fn exit_codes_are_the_commands() {
    let w = world!();
    assert_eq!(code(&w.run(&[], "exit 0")), 0);
    assert_eq!(code(&w.run(&[], "exit 7")), 7);
    let o = w.run(&[], "exec /no/such/program");
    assert_eq!(code(&o), 127, "{}", String::from_utf8_lossy(&o.stderr));
    let mut c = Command::new(BIN);
    c.args(["run"])
        .arg(w.lower())
        .args(["--", "no-such-command"])
        .env("TMPDIR", w.tmp());
    let o = wait_output(c.stderr(Stdio::piped()).spawn().expect("spawn"));
    assert_eq!(code(&o), 127);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
    w.assert_torn_down();
}

#[test]
fn a_signal_death_is_128_plus_the_signal() {
    let w = world!();
    assert_eq!(code(&w.run(&[], "kill -KILL $$")), 128 + 9);
    assert_eq!(code(&w.run(&[], "kill -USR1 $$")), 128 + libc::SIGUSR1);
}

#[test]
fn sigterm_to_run_reaches_the_command_and_everything_is_torn_down() {
    let w = world!();
    let mut child = w
        .cmd(
            &[],
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait for "ready" so the trap is installed.
    let mut so = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut b = [0u8; 64];
    while !String::from_utf8_lossy(&seen).contains("ready") {
        let n = so.read(&mut b).expect("read");
        assert!(n > 0, "container ended before ready");
        seen.extend_from_slice(&b[..n]);
    }
    // SAFETY: plain kill of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.stdout = Some(so);
    let o = wait_output(child);
    assert_eq!(code(&o), 42, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("got-term"));
    w.assert_torn_down();
}

#[test]
fn init_reaps_orphans() {
    let w = world!();
    // Each subshell leaves a sleeping orphan that init inherits; once they end, none may stay a
    // zombie.
    let out = ok(&w.run(
        &[],
        "for i in 1 2 3 4 5; do (sleep 0.2 &); done; sleep 0.1; \
         echo parents $(ps -o ppid,comm | awk '$2==\"sleep\"{print $1}' | sort -u); \
         sleep 0.5; ps -o stat,comm",
    ));
    assert!(
        out.contains("parents 1\n"),
        "orphans not adopted by pid 1: {out}"
    );
    let zombies: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with('Z'))
        .collect();
    assert!(zombies.is_empty(), "zombies: {zombies:?}\n{out}");
}

#[test]
fn hostname_and_generated_etc_files_stay_out_of_the_container_layer() {
    let w = world!();
    let upper = w.path("upper");
    let out = ok(&w.run(
        &[
            "--hostname",
            "box1",
            "--upper",
            upper.to_str().expect("utf8"),
        ],
        "hostname; cat /etc/hostname; grep -c box1 /etc/hosts; cat /etc/resolv.conf; \
         echo HOSTNAME=$HOSTNAME",
    ));
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(out.starts_with("box1\nbox1\n1\n"), "{out}");
    assert!(out.contains(&host_resolv), "{out}");
    assert!(out.contains("HOSTNAME=box1"));
    assert!(
        !upper.join("etc").exists(),
        "init files leaked into the upper"
    );
    // The lower's placeholders are untouched.
    assert_eq!(
        std::fs::read(w.lower().join("etc/hostname")).expect("read"),
        b""
    );
}

#[test]
fn proc_dev_and_sys_are_the_containers() {
    let w = world!();
    let out = ok(&w.run(
        &[],
        "echo pid=$$; cat /proc/1/cmdline | tr '\\0' ' '; echo; ps -o pid,comm | wc -l; \
         ls /dev | tr '\\n' ' '; echo; echo x > /dev/null; head -c 5 /dev/zero | wc -c; \
         for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done; \
         test -c /dev/pts/ptmx && echo pts-ok; touch /dev/shm/a && echo shm-ok; \
         ls /sys/kernel >/dev/null && echo sys-ok; touch /sys/x 2>/dev/null || echo sys-ro; \
         touch /tmp/t && echo tmp-ok",
    ));
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "pid=2", "{out}");
    assert!(
        l[1].contains("unionfuse run"),
        "pid 1 is not our init: {out}"
    );
    assert_eq!(l[2].trim(), "5", "ps header + init + sh + ps + wc: {out}");
    for d in [
        "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
        "urandom", "zero",
    ] {
        assert!(l[3].split(' ').any(|x| x == d), "/dev/{d} missing: {out}");
    }
    assert_eq!(l[4].trim(), "5");
    assert_eq!(
        &l[5..10],
        [
            "/proc/self/fd",
            "/proc/self/fd/0",
            "/proc/self/fd/1",
            "/proc/self/fd/2",
            "pts/ptmx"
        ]
    );
    assert_eq!(&l[10..], ["pts-ok", "shm-ok", "sys-ok", "sys-ro", "tmp-ok"]);
}

#[test]
fn the_host_is_unreachable() {
    let w = world!();
    let marker = w.path("host-marker");
    std::fs::write(&marker, "secret").expect("marker");
    let script = format!(
        "test -e {} && echo visible; ls /; cat /proc/self/mountinfo | wc -l; \
         grep -c ' / / ' /proc/self/mountinfo",
        marker.display()
    );
    let out = ok(&w.run(&[], &script));
    assert!(!out.contains("visible"), "{out}");
    let names: Vec<&str> = out
        .lines()
        .take_while(|l| !l.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(
        names,
        ["bin", "dev", "etc", "home", "proc", "root", "sys", "tmp"],
        "{out}"
    );
}

#[test]
fn writes_land_in_the_upper_never_in_the_lower() {
    let w = world!();
    let upper = w.path("upper");
    let before = tree_hash(&w.lower());
    let u = upper.to_str().expect("utf8");
    ok(&w.run(
        &["--upper", u],
        "echo new > /etc/new; echo more >> /etc/motd; rm /bin/vi; mkdir -p /var/lib/x; \
         chmod 600 /etc/passwd; ln -s /etc/new /root/link",
    ));
    assert_eq!(tree_hash(&w.lower()), before, "the lower changed");
    assert_eq!(
        std::fs::read_to_string(upper.join("etc/new")).expect("new"),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("etc/motd")).expect("motd"),
        "lower motd\nmore\n"
    );
    let vi = std::fs::symlink_metadata(upper.join("bin/vi")).expect("whiteout");
    assert!(
        vi.file_type().is_char_device() && vi.rdev() == 0,
        "not a whiteout"
    );
    assert!(upper.join("var/lib/x").is_dir());
    // The work dir was in the run's private directory (on the upper's filesystem here), not
    // next to the upper (README, `run --overlay-workdir`).
    assert!(!unionfuse::config::default_workdir(&upper).exists());
    // A second run on the same upper sees the changes.
    let out = ok(&w.run(
        &["--upper", u],
        "cat /etc/new; test -e /bin/vi || echo gone",
    ));
    assert_eq!(out, "new\ngone\n");
}

#[test]
fn volumes_bind_read_write_and_read_only() {
    let w = world!();
    let rw = w.path("rw");
    let ro = w.path("ro");
    std::fs::create_dir_all(&rw).expect("rw");
    std::fs::create_dir_all(&ro).expect("ro");
    std::fs::write(ro.join("f"), "ro data").expect("f");
    let file = w.path("single");
    std::fs::write(&file, "one file").expect("single");
    let vs = [
        format!("{}:/data", rw.display()),
        format!("{}:/mnt/ro:ro", ro.display()),
        format!("{}:/etc/single:ro", file.display()),
    ];
    let out = ok(&w.run(
        &["-v", &vs[0], "-v", &vs[1], "-v", &vs[2]],
        "echo hello > /data/out; cat /mnt/ro/f; echo; cat /etc/single; echo; \
         touch /mnt/ro/x 2>/dev/null || echo ro-refused; \
         echo y 2>/dev/null > /etc/single || echo file-ro-refused",
    ));
    assert_eq!(out, "ro data\none file\nro-refused\nfile-ro-refused\n");
    assert_eq!(
        std::fs::read_to_string(rw.join("out")).expect("out"),
        "hello\n"
    );
    assert!(!ro.join("x").exists());
}

#[test]
fn net_none_has_only_loopback_and_it_is_up() {
    let w = world!();
    let out = ok(&w.run(
        &["--net", "none"],
        "ls /sys/class/net; ip link show lo | head -1",
    ));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("lo"), "{out}");
    let lo = lines.next().unwrap_or_default();
    assert!(lo.contains("<LOOPBACK,UP"), "{out}");
    assert_eq!(lines.next(), None, "{out}");
}

#[test]
fn user_env_workdir_and_read_only_flags_take_effect() {
    let w = world!();
    let o = w.run(
        &[
            "-u",
            "alice",
            "-e",
            "FOO=bar",
            "-e",
            "PATH=/bin",
            "-w",
            "/home/alice/w",
        ],
        "id -u; id -g; id -G; pwd; echo $HOME $FOO $PATH; env | grep -c ^TERM= || true",
    );
    assert_eq!(
        ok(&o),
        "1000\n1000\n1000 10\n/home/alice/w\n/home/alice bar /bin\n0\n"
    );
    let out = ok(&w.run(&["-u", "1234:5"], "id -u; id -g; echo $HOME"));
    assert_eq!(out, "1234\n5\n/\n");
    let out = ok(&w.run(
        &["--read-only"],
        "touch /new 2>/dev/null || echo root-ro; touch /dev/shm/ok && echo shm-rw",
    ));
    assert_eq!(out, "root-ro\nshm-rw\n");
}

#[test]
fn tty_gives_a_pty_with_the_callers_size() {
    let w = world!();
    let (mut master, mut slave) = (0, 0);
    let ws = libc::winsize {
        ws_row: 33,
        ws_col: 77,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: out pointers are valid; ws is a valid winsize.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(r, 0, "openpty");
    use std::os::fd::FromRawFd;
    // SAFETY: both fds are fresh from openpty and owned here.
    let (master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    };
    let mut c = w.cmd(&["-t"], "tty; stty size; echo TERM=$TERM; exit 5");
    c.stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave);
    let child = c.spawn().expect("spawn");
    drop(c);
    // Read the master on a thread until the child ends (EIO when the slave closes).
    let reader = std::thread::spawn(move || {
        let mut m = master;
        let mut all = Vec::new();
        let mut b = [0u8; 4096];
        while let Ok(n) = m.read(&mut b) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&b[..n]);
            if String::from_utf8_lossy(&all).contains("TERM=xterm") {
                break;
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let o = wait_output(child);
    assert_eq!(code(&o), 5);
    let text = reader.join().expect("reader");
    assert!(text.contains("/dev/pts/0"), "{text:?}");
    assert!(text.contains("33 77"), "{text:?}");
    assert!(text.contains("TERM=xterm"), "{text:?}");
    w.assert_torn_down();
}

/// /dev/fuse must be usable by uid 65534 for the rootless test (0666 is the usual mode).
static FUSE_MODE: Mutex<()> = Mutex::new(());

struct FuseMode {
    old: u32,
}

impl FuseMode {
    fn open_to_all() -> FuseMode {
        let old = std::fs::metadata("/dev/fuse").expect("/dev/fuse").mode() & 0o7777;
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666))
            .expect("chmod /dev/fuse");
        FuseMode { old }
    }
}

impl Drop for FuseMode {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.old));
    }
}

#[test]
fn rootless_run_works_as_an_unprivileged_user() {
    let w = world!();
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip_or_fail_in_ci("setpriv (util-linux) is not installed");
        return;
    }
    let _lock = FUSE_MODE.lock().unwrap_or_else(|e| e.into_inner());
    let _mode = FuseMode::open_to_all();
    let upper = w.path("upper");
    std::fs::create_dir_all(&upper).expect("upper");
    for p in [w.tmp(), upper.clone(), w.dir.path().to_path_buf()] {
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).expect("chown");
    }
    // A rootless image belongs to the user who runs it (ids outside the map can't be copied up,
    // as with kernel overlay in a user namespace): the caller becomes the container's root.
    let st = Command::new("chown")
        .args(["-R", "-h", "65534:65534"])
        .arg(w.lower())
        .status()
        .expect("chown -R");
    assert!(st.success());
    let before = tree_hash(&w.lower());
    let rootless = |script: &str| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "run",
        ])
        .args(["--hostname", "rl", "--upper"])
        .arg(&upper)
        .arg(w.lower())
        .args(["--", "sh", "-c", script])
        .env("TMPDIR", w.tmp())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let o = wait_output(c.spawn().expect("spawn setpriv"));
        w.assert_torn_down();
        o
    };
    let out = ok(&rootless(
        "id -u; hostname; cat /proc/self/uid_map | tr -s ' '; echo data > /tmp/f; \
         ls /sys/class/net | grep -c lo; ps -o pid,comm | head -2 | tail -1; rm /bin/vi; \
         rm -r /home; mkdir /home; ls -ld /home /etc/motd | cut -c1-30",
    ));
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "0", "{out}");
    assert_eq!(l[1], "rl");
    assert_eq!(l[2].trim(), "0 65534 1");
    assert_eq!(l[3], "1");
    assert!(l[4].trim().starts_with("1 "), "{out}");
    let f = upper.join("tmp/f");
    assert_eq!(std::fs::read_to_string(&f).expect("upper file"), "data\n");
    assert_eq!(
        std::fs::metadata(&f).expect("stat").uid(),
        65534,
        "owned by the caller"
    );
    assert_eq!(code(&rootless("exit 9")), 9);
    assert_eq!(tree_hash(&w.lower()), before, "the lower changed");
}
