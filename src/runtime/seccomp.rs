//! The container's seccomp filter as data: the default deny list (the effect of podman's and
//! docker's default profiles), a profile in the engines' JSON format (`--security-opt
//! seccomp=FILE`), and their compilation to classic BPF. Pure: no syscall here; the program is
//! installed by `sys::install_seccomp`, last before exec. x86_64 only (the syscall table).

use super::caps::{self, Caps};
use super::syscalls;

/// What the filter answers for a syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Errno(u16),
    KillThread,
    KillProcess,
    Trap,
    Log,
    /// SCMP_ACT_TRACE: without a tracer the kernel answers ENOSYS.
    Trace(u16),
}

/// A comparison of one 64-bit syscall argument (libseccomp's SCMP_CMP_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `arg & mask == value`.
    MaskedEq(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub index: u8,
    pub op: Op,
    pub value: u64,
}

/// One syscall's rule: the action when every condition holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub nr: u32,
    pub conds: Vec<Cond>,
    pub action: Action,
}

/// Rules are tried in order (first match wins), then `default` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub default: Action,
    pub rules: Vec<Rule>,
}

/// One classic BPF instruction (struct sock_filter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

pub fn nr(name: &str) -> Option<u32> {
    syscalls::X86_64
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| syscalls::X86_64[i].1)
}

const EPERM: u16 = libc::EPERM as u16;
const ENOSYS: u16 = libc::ENOSYS as u16;

/// Denied whatever the capabilities, with EPERM: podman's explicit EPERM list (the x86_64
/// names), plus the keyring calls docker's profile leaves out (keys are not namespaced).
const ALWAYS_DENIED: &[&str] = &[
    "kexec_load",
    "kexec_file_load",
    "io_pgetevents",
    "migrate_pages",
    "move_pages",
    "nfsservctl",
    "swapon",
    "swapoff",
    "sysfs",
    "uselib",
    "userfaultfd",
    "ustat",
    "vmsplice",
    "keyctl",
    "add_key",
    "request_key",
];

/// Denied (EPERM) unless the container holds the capability, as podman's and docker's profiles
/// gate them. The kernel checks the capability too; the filter also shuts the code paths that
/// need none (bpf, perf_event_open) and keeps the answer EPERM.
const GATED: &[(u32, &[&str])] = &[
    (caps::DAC_READ_SEARCH, &["open_by_handle_at"]),
    (
        caps::SYS_ADMIN,
        &[
            "bpf",
            "fanotify_init",
            "lookup_dcookie",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "mount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
        ],
    ),
    (caps::SYS_BOOT, &["reboot"]),
    (caps::SYS_CHROOT, &["chroot"]),
    (
        caps::SYS_MODULE,
        &["init_module", "finit_module", "delete_module"],
    ),
    (caps::SYS_PACCT, &["acct"]),
    (caps::SYS_PTRACE, &["kcmp", "process_madvise"]),
    (caps::SYS_RAWIO, &["ioperm", "iopl"]),
    (
        caps::SYS_TIME,
        &["clock_settime", "settimeofday", "adjtimex", "clock_adjtime"],
    ),
    (caps::SYS_TTY_CONFIG, &["vhangup"]),
];

/// The default filter for a container holding `held` (its bounding set). `userns`: the
/// container runs in a user namespace of its own; without one (a rootful run) a new user
/// namespace would give back every capability inside it, so unshare/clone with CLONE_NEWUSER
/// answer EPERM and clone3 (whose flags a filter cannot read) ENOSYS, so that the C library
/// falls back to clone, as docker's profile does.
pub fn default_filter(held: Caps, userns: bool) -> Filter {
    let mut rules = Vec::new();
    let mut deny = |name: &str, errno: u16, conds: Vec<Cond>| {
        if let Some(n) = nr(name) {
            rules.push(Rule {
                nr: n,
                conds,
                action: Action::Errno(errno),
            });
        }
    };
    for name in ALWAYS_DENIED {
        deny(name, EPERM, vec![]);
    }
    for (cap, names) in GATED {
        if !held.has(*cap) {
            for name in *names {
                deny(name, EPERM, vec![]);
            }
        }
    }
    if !userns && !held.has(caps::SYS_ADMIN) {
        let newuser = Cond {
            index: 0,
            op: Op::MaskedEq(libc::CLONE_NEWUSER as u64),
            value: libc::CLONE_NEWUSER as u64,
        };
        // x86_64's clone and unshare both take the flags first.
        deny("unshare", EPERM, vec![newuser.clone()]);
        deny("clone", EPERM, vec![newuser]);
        deny("clone3", ENOSYS, vec![]);
    }
    Filter {
        default: Action::Allow,
        rules,
    }
}

/// A profile in the engines' JSON format (docker's seccomp profiles, the OCI `linux.seccomp`):
/// `defaultAction`, `defaultErrnoRet`, `syscalls[]` with `names` (or `name`), `action`,
/// `errnoRet`, `args[]` (`index`, `value`, `valueTwo`, `op`) and `includes`/`excludes` by
/// `caps`, `arches` and `minKernel`. Rules with conditions are tried before those without, each
/// group in file order. Unknown syscall names are skipped, as libseccomp does.
pub fn parse_profile(text: &str, held: Caps, kernel: (u32, u32)) -> Result<Filter, String> {
    use serde_json::Value;
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let errno_of = |v: &Value, key: &str| -> Result<Option<u16>, String> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .filter(|n| *n < 4096)
                .map(|n| Some(n as u16))
                .ok_or_else(|| format!("{key}: expected an errno number, got {x}")),
        }
    };
    let default_errno = errno_of(&v, "defaultErrnoRet")?.unwrap_or(EPERM);
    let default = action(
        v.get("defaultAction")
            .and_then(Value::as_str)
            .ok_or("defaultAction: missing")?,
        default_errno,
    )?;
    let mut with_args = Vec::new();
    let mut plain = Vec::new();
    let empty = vec![];
    let calls = match v.get("syscalls") {
        None | Some(Value::Null) => &empty,
        Some(Value::Array(a)) => a,
        Some(_) => return Err("syscalls: expected a list".into()),
    };
    for (i, s) in calls.iter().enumerate() {
        let at = |what: String| format!("syscalls[{i}]: {what}");
        if !applies(s, held, kernel).map_err(at)? {
            continue;
        }
        let mut names: Vec<&str> = match s.get("names") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if let Some(n) = s.get("name").and_then(Value::as_str) {
            names.push(n);
        }
        let act = s
            .get("action")
            .and_then(Value::as_str)
            .ok_or_else(|| at("action: missing".into()))?;
        let errno = errno_of(s, "errnoRet")
            .map_err(at)?
            .unwrap_or(default_errno);
        let act = action(act, errno).map_err(at)?;
        let conds = match s.get("args") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(cond)
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?,
            Some(_) => return Err(at("args: expected a list".into())),
        };
        for name in names {
            let Some(n) = nr(name) else {
                tracing::debug!(name, "seccomp profile: unknown syscall, skipped");
                continue;
            };
            let r = Rule {
                nr: n,
                conds: conds.clone(),
                action: act,
            };
            if r.conds.is_empty() {
                plain.push(r);
            } else {
                with_args.push(r);
            }
        }
    }
    with_args.extend(plain);
    Ok(Filter {
        default,
        rules: with_args,
    })
}

fn action(name: &str, errno: u16) -> Result<Action, String> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => Action::Errno(errno),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_TRACE" => Action::Trace(errno),
        other => return Err(format!("action {other}: not supported")),
    })
}

fn cond(a: &serde_json::Value) -> Result<Cond, String> {
    let num = |k: &str| a.get(k).and_then(serde_json::Value::as_u64);
    let index = num("index")
        .filter(|i| *i < 6)
        .ok_or_else(|| format!("args: index 0..5 expected in {a}"))?;
    let value = num("value").unwrap_or(0);
    let two = num("valueTwo").unwrap_or(0);
    let op = a
        .get("op")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| format!("args: op missing in {a}"))?;
    // For MASKED_EQ libseccomp takes the mask first: `value` is the mask, `valueTwo` the datum.
    let (op, value) = match op {
        "SCMP_CMP_EQ" => (Op::Eq, value),
        "SCMP_CMP_NE" => (Op::Ne, value),
        "SCMP_CMP_LT" => (Op::Lt, value),
        "SCMP_CMP_LE" => (Op::Le, value),
        "SCMP_CMP_GT" => (Op::Gt, value),
        "SCMP_CMP_GE" => (Op::Ge, value),
        "SCMP_CMP_MASKED_EQ" => (Op::MaskedEq(value), two),
        other => return Err(format!("args: op {other} not supported")),
    };
    Ok(Cond {
        index: index as u8,
        op,
        value,
    })
}

/// Whether a profile entry's `includes`/`excludes` select it here.
fn applies(s: &serde_json::Value, held: Caps, kernel: (u32, u32)) -> Result<bool, String> {
    let list = |v: Option<&serde_json::Value>, key: &str| -> Vec<String> {
        v.and_then(|x| x.get(key))
            .and_then(serde_json::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let amd64 = |a: &String| matches!(a.as_str(), "amd64" | "x86_64" | "SCMP_ARCH_X86_64");
    let cap_held = |c: &String| caps::by_name(c).is_some_and(|n| held.has(n));
    let inc = s.get("includes");
    let exc = s.get("excludes");
    let inc_arches = list(inc, "arches");
    if !inc_arches.is_empty() && !inc_arches.iter().any(amd64) {
        return Ok(false);
    }
    if list(exc, "arches").iter().any(amd64) {
        return Ok(false);
    }
    if !list(inc, "caps").iter().all(cap_held) {
        return Ok(false);
    }
    if list(exc, "caps").iter().any(cap_held) {
        return Ok(false);
    }
    if let Some(min) = inc
        .and_then(|x| x.get("minKernel"))
        .and_then(serde_json::Value::as_str)
    {
        let want = parse_kernel(min).ok_or_else(|| format!("minKernel {min}: expected X.Y"))?;
        if kernel < want {
            return Ok(false);
        }
    }
    Ok(true)
}

/// "6.18.0-foo" -> (6, 18).
pub fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

// Classic BPF, as in linux/filter.h and linux/seccomp.h.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// x32 syscalls carry this bit; they would bypass a list of x86_64 numbers.
const X32_BIT: u32 = 0x4000_0000;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

fn ret_value(a: Action) -> u32 {
    match a {
        Action::Allow => 0x7fff_0000,
        Action::Errno(e) => 0x0005_0000 | u32::from(e),
        Action::KillThread => 0,
        Action::KillProcess => 0x8000_0000,
        Action::Trap => 0x0003_0000,
        Action::Log => 0x7ffc_0000,
        Action::Trace(e) => 0x7ff0_0000 | u32::from(e),
    }
}

/// A jump target inside one rule's block.
#[derive(Clone, Copy)]
enum To {
    Next,
    Skip(u8),
    /// The rule does not match: the start of the next rule's block.
    Fail,
}

enum Op1 {
    Ld(u32),
    And(u32),
    Jmp(u16, u32, To, To),
    Ret(u32),
}

fn cond_code(c: &Cond, out: &mut Vec<Op1>) {
    let lo_off = OFF_ARGS + 8 * u32::from(c.index);
    let hi_off = lo_off + 4;
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    use To::{Fail, Next, Skip};
    match c.op {
        Op::Eq => out.extend([
            Op1::Ld(hi_off),
            Op1::Jmp(JEQ_K, hi, Next, Fail),
            Op1::Ld(lo_off),
            Op1::Jmp(JEQ_K, lo, Next, Fail),
        ]),
        Op::MaskedEq(m) => out.extend([
            Op1::Ld(hi_off),
            Op1::And((m >> 32) as u32),
            Op1::Jmp(JEQ_K, hi, Next, Fail),
            Op1::Ld(lo_off),
            Op1::And(m as u32),
            Op1::Jmp(JEQ_K, lo, Next, Fail),
        ]),
        Op::Ne => out.extend([
            Op1::Ld(hi_off),
            Op1::Jmp(JEQ_K, hi, Next, Skip(2)),
            Op1::Ld(lo_off),
            Op1::Jmp(JEQ_K, lo, Fail, Next),
        ]),
        // Unsigned 64-bit order: the high words decide unless equal.
        Op::Gt | Op::Ge => out.extend([
            Op1::Ld(hi_off),
            Op1::Jmp(JGT_K, hi, Skip(3), Next),
            Op1::Jmp(JEQ_K, hi, Next, Fail),
            Op1::Ld(lo_off),
            Op1::Jmp(if c.op == Op::Gt { JGT_K } else { JGE_K }, lo, Next, Fail),
        ]),
        Op::Lt | Op::Le => out.extend([
            Op1::Ld(hi_off),
            Op1::Jmp(JGT_K, hi, Fail, Next),
            Op1::Jmp(JEQ_K, hi, Next, Skip(2)),
            Op1::Ld(lo_off),
            Op1::Jmp(if c.op == Op::Lt { JGE_K } else { JGT_K }, lo, Fail, Next),
        ]),
    }
}

/// The BPF program: a foreign architecture is killed (its numbers mean other calls), x32
/// calls get ENOSYS, then one block per rule, then the default.
pub fn compile(f: &Filter) -> Result<Vec<Insn>, String> {
    let insn = |code, jt, jf, k| Insn { code, jt, jf, k };
    let mut prog = vec![
        insn(LD_W_ABS, 0, 0, OFF_ARCH),
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, ret_value(Action::KillProcess)),
        insn(LD_W_ABS, 0, 0, OFF_NR),
        insn(JGE_K, 0, 1, X32_BIT),
        insn(RET_K, 0, 0, ret_value(Action::Errno(ENOSYS))),
    ];
    for r in &f.rules {
        let mut block = vec![Op1::Ld(OFF_NR), Op1::Jmp(JEQ_K, r.nr, To::Next, To::Fail)];
        for c in &r.conds {
            cond_code(c, &mut block);
        }
        block.push(Op1::Ret(ret_value(r.action)));
        let len = block.len();
        if len > 255 {
            return Err(format!("syscall {}: too many conditions", r.nr));
        }
        for (i, op) in block.into_iter().enumerate() {
            let to = |t: To| match t {
                To::Next => 0,
                To::Skip(n) => n,
                To::Fail => (len - i - 1) as u8,
            };
            prog.push(match op {
                Op1::Ld(off) => insn(LD_W_ABS, 0, 0, off),
                Op1::And(k) => insn(AND_K, 0, 0, k),
                Op1::Jmp(code, k, t, f) => insn(code, to(t), to(f), k),
                Op1::Ret(k) => insn(RET_K, 0, 0, k),
            });
        }
    }
    prog.push(insn(RET_K, 0, 0, ret_value(f.default)));
    // BPF_MAXINSNS.
    if prog.len() > 4096 {
        return Err(format!("{} instructions: more than 4096", prog.len()));
    }
    Ok(prog)
}

/// Run the program on one syscall as the kernel would (for the unit tests).
#[cfg(test)]
pub fn eval(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            0 => nr,
            4 => arch,
            o if o >= OFF_ARGS => {
                let a = args[((o - OFF_ARGS) / 8) as usize];
                if (o - OFF_ARGS).is_multiple_of(8) {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
            _ => 0,
        }
    };
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => acc = word(i.k),
            AND_K => acc &= i.k,
            RET_K => return i.k,
            c => {
                let hit = match c {
                    JEQ_K => acc == i.k,
                    JGT_K => acc > i.k,
                    JGE_K => acc >= i.k,
                    _ => panic!("unknown op {c:#x}"),
                };
                pc += usize::from(if hit { i.jt } else { i.jf });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: u32 = 0x7fff_0000;
    const DENY: u32 = 0x0005_0000 | libc::EPERM as u32;

    fn run(prog: &[Insn], name: &str, args: [u64; 6]) -> u32 {
        eval(prog, AUDIT_ARCH_X86_64, nr(name).expect(name), args)
    }

    #[test]
    fn the_table_is_sorted_and_knows_common_calls() {
        assert!(syscalls::X86_64.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(nr("read"), Some(0));
        assert_eq!(nr("kexec_load"), Some(libc::SYS_kexec_load as u32));
        assert_eq!(nr("no_such_call"), None);
    }

    #[test]
    fn default_filter_denies_the_dangerous_calls_and_allows_the_rest() {
        let prog = compile(&default_filter(caps::default_set(), false)).expect("compile");
        for n in [
            "kexec_load",
            "init_module",
            "finit_module",
            "bpf",
            "keyctl",
            "perf_event_open",
            "open_by_handle_at",
            "reboot",
            "swapon",
            "mount",
            "umount2",
        ] {
            assert_eq!(run(&prog, n, [0; 6]), DENY, "{n}");
        }
        for n in [
            "read",
            "execve",
            "chroot",
            "setuid",
            "capset",
            "close_range",
        ] {
            assert_eq!(run(&prog, n, [0; 6]), ALLOW, "{n}");
        }
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(run(&prog, "unshare", [newuser, 0, 0, 0, 0, 0]), DENY);
        assert_eq!(
            run(&prog, "unshare", [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(run(&prog, "clone", [newuser | 17, 0, 0, 0, 0, 0]), DENY);
        assert_eq!(run(&prog, "clone", [17, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            run(&prog, "clone3", [0; 6]),
            0x0005_0000 | libc::ENOSYS as u32
        );
        // Other architectures are killed; x32 numbers get ENOSYS.
        assert_eq!(eval(&prog, 0x4000_0003, 0, [0; 6]), 0x8000_0000);
        assert_eq!(
            eval(&prog, AUDIT_ARCH_X86_64, X32_BIT | 246, [0; 6]) & 0xffff,
            38
        );
    }

    #[test]
    fn held_capabilities_open_their_calls() {
        let all = compile(&default_filter(caps::all(), false)).expect("compile");
        for n in ["mount", "bpf", "reboot", "init_module", "open_by_handle_at"] {
            assert_eq!(run(&all, n, [0; 6]), ALLOW, "{n}");
        }
        assert_eq!(run(&all, "kexec_load", [0; 6]), DENY);
        // In a user namespace of its own, a container may make nested ones.
        let rootless = compile(&default_filter(caps::default_set(), true)).expect("compile");
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(run(&rootless, "unshare", [newuser, 0, 0, 0, 0, 0]), ALLOW);
    }

    #[test]
    fn profile_conditions_compare_64_bit_values() {
        let text = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
            {"names":["personality"],"action":"SCMP_ACT_ALLOW",
             "args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_EQ"}]},
            {"names":["read","write","no_such"],"action":"SCMP_ACT_ALLOW"},
            {"names":["dup"],"action":"SCMP_ACT_ERRNO","errnoRet":22,
             "args":[{"index":1,"value":5,"op":"SCMP_CMP_GT"},{"index":2,"value":10,"op":"SCMP_CMP_LE"}]},
            {"names":["dup2"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":7,"op":"SCMP_CMP_NE"}]},
            {"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
            {"names":["chroot"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"]}},
            {"names":["modify_ldt"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["arm64"]}},
            {"names":["getpid"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"99.0"}},
            {"names":["dup3"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":3,"valueTwo":2,"op":"SCMP_CMP_MASKED_EQ"}]}
        ]}"#;
        let f = parse_profile(text, caps::default_set(), (6, 18)).expect("parse");
        let p = compile(&f).expect("compile");
        let enosys = 0x0005_0000 | 38;
        assert_eq!(run(&p, "read", [0; 6]), ALLOW);
        assert_eq!(run(&p, "open", [0; 6]), enosys);
        assert_eq!(run(&p, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            run(&p, "personality", [0x1_ffff_ffff, 0, 0, 0, 0, 0]),
            enosys
        );
        assert_eq!(run(&p, "dup", [0, 6, 10, 0, 0, 0]), 0x0005_0000 | 22);
        assert_eq!(run(&p, "dup", [0, 5, 10, 0, 0, 0]), enosys);
        assert_eq!(run(&p, "dup", [0, 1 << 33, 10, 0, 0, 0]), 0x0005_0000 | 22);
        assert_eq!(run(&p, "dup", [0, 6, 11, 0, 0, 0]), enosys);
        assert_eq!(run(&p, "dup2", [7, 0, 0, 0, 0, 0]), enosys);
        assert_eq!(run(&p, "dup2", [1 << 32 | 7, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&p, "mount", [0; 6]), enosys);
        assert_eq!(run(&p, "chroot", [0; 6]), ALLOW);
        assert_eq!(run(&p, "modify_ldt", [0; 6]), enosys);
        assert_eq!(run(&p, "getpid", [0; 6]), enosys);
        assert_eq!(run(&p, "dup3", [0, 0b110, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&p, "dup3", [0, 0b101, 0, 0, 0, 0]), enosys);
    }

    #[test]
    fn podmans_own_profile_compiles() {
        let Ok(text) = std::fs::read_to_string("/usr/share/containers/seccomp.json") else {
            return;
        };
        let f = parse_profile(&text, caps::default_set(), (6, 18)).expect("parse");
        let p = compile(&f).expect("compile");
        assert_eq!(run(&p, "read", [0; 6]), ALLOW);
        assert_eq!(run(&p, "kexec_load", [0; 6]), DENY);
        assert_eq!(run(&p, "bpf", [0; 6]), DENY);
        assert_eq!(run(&p, "add_key", [0; 6]), 0x0005_0000 | 38);
    }

    #[test]
    fn bad_profiles_are_refused_with_the_reason() {
        let e = parse_profile("{}", caps::default_set(), (6, 18)).expect_err("no default");
        assert!(e.contains("defaultAction"), "{e}");
        let e = parse_profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
            caps::default_set(),
            (6, 18),
        )
        .expect_err("notify");
        assert!(e.starts_with("syscalls[0]: action SCMP_ACT_NOTIFY"), "{e}");
        let e = parse_profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":9,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
            caps::default_set(),
            (6, 18),
        )
        .expect_err("index");
        assert!(e.contains("index"), "{e}");
    }
}
