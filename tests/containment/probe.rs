//! The attacker placed in the container by tests/containment.rs: each attack is one raw
//! syscall, and its result is printed as `name=ok` or `name=ERRNO`. Built there with
//! `rustc -C target-feature=+crt-static` (no crate, no C library needed in the image).

use std::ffi::CString;

unsafe extern "C" {
    fn syscall(n: i64, ...) -> i64;
}

fn cs(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn name(e: i32) -> String {
    let n = match e {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        9 => "EBADF",
        13 => "EACCES",
        14 => "EFAULT",
        15 => "ENOTBLK",
        16 => "EBUSY",
        19 => "ENODEV",
        22 => "EINVAL",
        30 => "EROFS",
        38 => "ENOSYS",
        95 => "EOPNOTSUPP",
        _ => return format!("errno{e}"),
    };
    n.to_string()
}

fn res(r: i64) -> String {
    if r < 0 {
        name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        "ok".into()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("all");
    if what == "euid" {
        // SAFETY: geteuid takes nothing.
        println!("euid={}", unsafe { syscall(107) });
        return;
    }
    if what == "write" || what == "chmod" {
        // `write PATH`, `chmod PATH`: open for writing, or chmod 0777, and print the errno.
        let path = cs(args.get(2).map_or("/", String::as_str));
        // SAFETY: a NUL-terminated path and integers.
        let r = unsafe {
            if what == "write" {
                syscall(257, -100i64, path.as_ptr() as i64, 1i64)
            } else {
                syscall(268, -100i64, path.as_ptr() as i64, 0o777i64)
            }
        };
        println!("{what}={}", res(r));
        return;
    }
    let outside: i64 = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(1);
    let buf = [0u8; 128];
    let at_fdcwd: i64 = -100;
    let _ = std::fs::create_dir_all("/tmp/t");
    let _ = std::fs::create_dir_all("/tmp/h");
    // SAFETY: each call passes valid pointers (NUL-terminated strings, `buf`) or integers; the
    // calls are expected to fail.
    let out: Vec<(&str, String)> = unsafe {
        let s = |n: i64, a: [i64; 5]| res(syscall(n, a[0], a[1], a[2], a[3], a[4]));
        let p = |c: &CString| c.as_ptr() as i64;
        let (x, t, h, hd) = (cs("x"), cs("/tmp/t"), cs("/tmp/h"), cs("/tmp/hd"));
        let (tmpfs, ext4, empty) = (cs("tmpfs"), cs("ext4"), cs(""));
        let (sysrq, core) = (cs("/proc/sysrq-trigger"), cs("/proc/sys/kernel/core_pattern"));
        let (user, k, none, slash) = (cs("user"), cs("k"), cs("/tmp/none"), cs("/"));
        let b = buf.as_ptr() as i64;
        // struct file_handle { handle_bytes = 8, handle_type = 1, f_handle[8] }
        let mut fh = [0u8; 16];
        fh[0] = 8;
        fh[4] = 1;
        vec![
            // First, before this program opens anything of its own.
            ("read_fd_3", s(0, [3, b, 1, 0, 0])),
            ("mount_tmpfs_dev", s(165, [p(&x), p(&t), p(&tmpfs), 0, p(&empty)])),
            ("mknod_blockdev", s(259, [at_fdcwd, p(&hd), 0o060600, 254 << 8, 0])),
            ("mount_blockdev", s(165, [p(&hd), p(&h), p(&ext4), 0, 0])),
            ("init_module", s(175, [b, 16, p(&empty), 0, 0])),
            ("finit_module", s(313, [0, p(&empty), 0, 0, 0])),
            ("kexec_load", s(246, [0, 0, 0, 0, 0])),
            ("kexec_file_load", s(320, [-1, -1, 0, p(&empty), 0])),
            ("write_sysrq_trigger", s(257, [at_fdcwd, p(&sysrq), 1, 0, 0])),
            ("write_proc_sys", s(257, [at_fdcwd, p(&core), 1, 0, 0])),
            ("keyctl", s(250, [1, 0, 0, 0, 0])),
            ("add_key", s(248, [p(&user), p(&k), b, 4, -3])),
            ("bpf", s(321, [5, b, 72, 0, 0])),
            ("perf_event_open", s(298, [b, 0, -1, -1, 0])),
            ("open_by_handle_at", {
                let root = syscall(257, at_fdcwd, p(&slash), 0i64);
                s(304, [root, fh.as_ptr() as i64, 0, 0, 0])
            }),
            ("ptrace_outside", s(101, [16, outside, 0, 0, 0])),
            ("unshare_user", s(272, [0x1000_0000, 0, 0, 0, 0])),
            ("swapon", s(167, [p(&none), 0, 0, 0, 0])),
            ("reboot", s(169, [0xfee1_dead, 672274793, 0, 0, 0])),
        ]
    };
    for (n, r) in out {
        println!("{n}={r}");
    }
    match std::fs::read("/proc/keys") {
        Ok(b) => println!("read_proc_keys={} bytes", b.len()),
        Err(e) => println!("read_proc_keys={}", name(e.raw_os_error().unwrap_or(0))),
    }
}
