//! The devices a container may use, and how each cgroup version enforces
//! them: v1's devices controller takes rule lines, v2 has no controller and
//! takes a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup,
//! which the kernel runs on every open and mknod of a device node.
//!
//! By hand: the program is a dozen instructions, and the crates that load
//! eBPF either build it from an ELF object (aya) or link the C libbpf
//! (libbpf-rs), which the build would then need. runc and crun assemble
//! theirs the same way.

// The `bpf(2)` system call and adopting the descriptor it returns are
// `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::CgroupError;

/// A character device a container may open, read, write and create;
/// every minor number when `minor` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Device {
    pub major: u32,
    pub minor: Option<u32>,
}

const fn char_dev(major: u32, minor: u32) -> Device {
    Device {
        major,
        minor: Some(minor),
    }
}

/// null, zero, full, random, urandom, tty, ptmx and the pts: crun's and
/// runc's default list less `/dev/console`. Everything else is denied.
pub(super) const ALLOWED: [Device; 8] = [
    char_dev(1, 3),
    char_dev(1, 5),
    char_dev(1, 7),
    char_dev(1, 8),
    char_dev(1, 9),
    char_dev(5, 0),
    char_dev(5, 2),
    Device {
        major: 136,
        minor: None,
    },
];

/// v1's `devices.allow` line for `d`, as `devices.list` shows it.
pub(super) fn v1_rule(d: &Device) -> String {
    match d.minor {
        Some(minor) => format!("c {}:{minor} rwm", d.major),
        None => format!("c {}:* rwm", d.major),
    }
}

// ---- cgroup v2: the eBPF program ----

/// One eBPF instruction (`struct bpf_insn`): opcode, registers (dst in the
/// low nibble), jump offset, immediate.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes (`linux/bpf.h`, `linux/bpf_common.h`).
/// `dst = *(u32 *)(src + off)`: BPF_LDX | BPF_MEM | BPF_W.
const LDX_W: u8 = 0x61;
/// `dst &= imm` (32-bit): BPF_ALU | BPF_AND | BPF_K.
const AND32_K: u8 = 0x54;
/// `if dst != imm goto +off`: BPF_JMP | BPF_JNE | BPF_K.
const JNE_K: u8 = 0x55;
/// `dst = imm`: BPF_ALU64 | BPF_MOV | BPF_K.
const MOV64_K: u8 = 0xb7;
/// BPF_JMP | BPF_EXIT.
const EXIT: u8 = 0x95;

/// `bpf_cgroup_dev_ctx.access_type`'s low half: a character device.
const DEV_CHAR: i32 = 2;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The program for `allowed`: 1 (allow) for a character device on the
/// list, whatever the access (each rule allows read, write and mknod), 0
/// (the kernel's EPERM) for anything else. Registers: r1 the context
/// (`access_type`, `major`, `minor`, each a u32), r2 the device type, r4
/// the major, r5 the minor.
fn program(allowed: &[Device]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for d in allowed {
        // Each rule: its tests jump past the rule's end (the allow) on a
        // mismatch, to the next rule.
        let tests: Vec<(u8, i32)> = [
            Some((2, DEV_CHAR)),
            Some((4, d.major as i32)),
            d.minor.map(|m| (5, m as i32)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let n = tests.len();
        for (i, (reg, value)) in tests.into_iter().enumerate() {
            // Past the remaining tests and the rule's two allow instructions.
            let skip = (n - 1 - i) as i16 + 2;
            p.push(insn(JNE_K, reg, 0, skip, value));
        }
        p.push(insn(MOV64_K, 0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

// `bpf(2)` commands, program and attach types (`linux/bpf.h`).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
#[cfg(test)]
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

/// `union bpf_attr` for BPF_PROG_LOAD, up to `prog_name` (the kernel takes
/// a prefix of the union and zeroes the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// `union bpf_attr` for BPF_PROG_QUERY.
#[cfg(test)]
#[repr(C)]
#[derive(Default)]
struct ProgQuery {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

/// `bpf(cmd, attr, sizeof attr)`.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised repr(C) prefix of
    // `union bpf_attr` for `cmd`, and its size is passed with it; the
    // pointers inside it point at buffers that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// Loads the program for [`ALLOWED`]; the verifier's log is in the error.
fn load() -> io::Result<OwnedFd> {
    let prog = program(&ALLOWED);
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 16 * 1024];
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"mezzo_devices");
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    let mut loaded = bpf(BPF_PROG_LOAD, &mut attr);
    if matches!(&loaded, Err(e) if e.raw_os_error() == Some(libc::EPERM)) {
        // Before Linux 5.11 programs are charged to RLIMIT_MEMLOCK (64 KiB
        // by default, shared by every process of the user), as runc found.
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
            loaded = bpf(BPF_PROG_LOAD, &mut attr);
        }
    }
    match loaded {
        // SAFETY: BPF_PROG_LOAD returns a new descriptor that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(e.kind(), format!("{e}; verifier: {}", log.trim())))
        }
    }
}

/// Attaches the device program to the v2 cgroup `dir`, for it and every
/// cgroup below it. Attached without flags, so nothing below may attach
/// another in its place, and a second attach (a restarted agent) replaces
/// the first at once, never leaving the containers under `dir` without
/// one. The kernel keeps the program while the cgroup exists.
pub(super) fn restrict_v2(dir: &Path) -> Result<(), CgroupError> {
    let prog = load().map_err(CgroupError::io("load the device filter (eBPF) for", dir))?;
    let cgroup = std::fs::File::open(dir).map_err(CgroupError::io("open", dir))?;
    let mut attr = ProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
    };
    // EPERM here: a device program attached above or here by another
    // manager (systemd attaches with BPF_F_ALLOW_MULTI) that does not let
    // this one in; `--cgroup-parent` chooses another place.
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(CgroupError::io(
        "attach the device filter (eBPF; EPERM: another manager's device program is attached here or above) to",
        dir,
    ))?;
    Ok(())
}

/// How many device programs are attached to `dir` itself.
#[cfg(test)]
pub(super) fn attached_v2(dir: &Path) -> io::Result<u32> {
    let cgroup = std::fs::File::open(dir)?;
    let mut ids = [0u32; 16];
    let mut attr = ProgQuery {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    Ok(attr.prog_cnt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program run in Rust, instruction by instruction, for a context.
    fn run(p: &[Insn], access_type: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access_type, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                AND32_K => r[dst] = u64::from(r[dst] as u32 & i.imm as u32),
                // The kernel compares all 64 bits with the immediate sign-extended.
                JNE_K if r[dst] != i.imm as i64 as u64 => pc = (pc as i64 + i64::from(i.off)) as usize,
                JNE_K => {}
                MOV64_K => r[dst] = i.imm as u64,
                EXIT => return r[0],
                c => panic!("unknown opcode {c:#x}"),
            }
        }
    }

    const CHAR: u32 = 2;
    const BLOCK: u32 = 1;
    const READ: u32 = 2 << 16;
    const MKNOD: u32 = 1 << 16;

    #[test]
    fn the_program_allows_exactly_the_list() {
        let p = program(&ALLOWED);
        for d in ALLOWED {
            let minors = d.minor.map_or(vec![0, 1, 77, u32::MAX], |m| vec![m]);
            for minor in minors {
                for access in [READ, MKNOD, READ | (4 << 16)] {
                    assert_eq!(run(&p, access | CHAR, d.major, minor), 1, "{d:?} {minor}");
                }
                assert_eq!(run(&p, READ | BLOCK, d.major, minor), 0, "block {d:?} {minor}");
            }
        }
        // kmsg, kvm, mem, fuse, loop, a disk; neighbours of allowed ones.
        for (major, minor) in [
            (1, 11),
            (10, 232),
            (1, 1),
            (10, 229),
            (7, 0),
            (8, 0),
            (1, 4),
            (1, 10),
            (5, 1),
            (135, 0),
            (137, 0),
        ] {
            assert_eq!(run(&p, READ | CHAR, major, minor), 0, "c {major}:{minor}");
            assert_eq!(run(&p, MKNOD | BLOCK, major, minor), 0, "b {major}:{minor}");
        }
    }

    #[test]
    fn v1_rules_read_as_devices_list_shows_them() {
        let rules: Vec<String> = ALLOWED.iter().map(v1_rule).collect();
        assert_eq!(rules[0], "c 1:3 rwm");
        assert_eq!(rules[7], "c 136:* rwm");
    }
}
