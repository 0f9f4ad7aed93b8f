//! The devices a container may use, and how each cgroup version enforces
//! them: v1's devices controller takes rule lines, v2 has no controller and
//! takes a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup,
//! which the kernel runs on every open and mknod of a device node.
//!
//! The program is assembled by hand (`bpf.rs` says why).

use std::path::Path;

use super::CgroupError;
use super::bpf::{self, AND32_K, EXIT, Insn, JNE_K, LDX_W, MOV64_K, insn};

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

/// `bpf_cgroup_dev_ctx.access_type`'s low half: a character device.
const DEV_CHAR: i32 = 2;

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

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

/// Attaches the device program to the v2 cgroup `dir`, for it and every
/// cgroup below it (as [`bpf::attach`] does).
pub(super) fn restrict_v2(dir: &Path) -> Result<(), CgroupError> {
    let insns = program(&ALLOWED);
    let p = bpf::Program {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        attach_type: BPF_CGROUP_DEVICE,
        name: "mezzo_devices",
        insns: &insns,
    };
    bpf::attach(dir, &p, "the device filter")
}

/// How many device programs are attached to `dir` itself.
#[cfg(test)]
pub(super) fn attached_v2(dir: &Path) -> std::io::Result<u32> {
    bpf::attached(dir, BPF_CGROUP_DEVICE)
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
            let (dst, src) = (i.dst(), i.src());
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
