//! What the agent's cgroup eBPF programs share: instructions, a small
//! assembler with labels, and the `bpf(2)` calls that load a program and
//! attach it to a cgroup.
//!
//! By hand: each program is a few dozen instructions, and the crates that
//! load eBPF either build it from an ELF object (aya) or link the C libbpf
//! (libbpf-rs), which the build would then need. runc and crun assemble
//! their device programs the same way.

// The `bpf(2)` system call and adopting the descriptor it returns are
// `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::CgroupError;

/// One eBPF instruction (`struct bpf_insn`): opcode, registers (dst in the
/// low nibble), jump offset, immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(super) struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

#[cfg(test)]
impl Insn {
    pub fn dst(self) -> usize {
        usize::from(self.regs & 0xf)
    }

    pub fn src(self) -> usize {
        usize::from(self.regs >> 4)
    }
}

pub(super) fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes (`linux/bpf.h`, `linux/bpf_common.h`). `32` ones work on the low
// halves of the registers (and zero the high half of a result).
/// `dst = *(u32 *)(src + off)`: BPF_LDX | BPF_MEM | BPF_W.
pub(super) const LDX_W: u8 = 0x61;
/// `*(u32 *)(dst + off) = src`: BPF_STX | BPF_MEM | BPF_W.
pub(super) const STX_W: u8 = 0x63;
/// `*(u16 *)(dst + off) = src`: BPF_STX | BPF_MEM | BPF_H.
pub(super) const STX_H: u8 = 0x6b;
/// `*(u32 *)(dst + off) = imm`: BPF_ST | BPF_MEM | BPF_W.
pub(super) const ST_W: u8 = 0x62;
/// `*(u16 *)(dst + off) = imm`: BPF_ST | BPF_MEM | BPF_H.
pub(super) const ST_H: u8 = 0x6a;
/// `dst = imm64`, over two instructions: BPF_LD | BPF_DW | BPF_IMM.
pub(super) const LD_IMM64: u8 = 0x18;
/// `dst &= imm` (32-bit): BPF_ALU | BPF_AND | BPF_K.
pub(super) const AND32_K: u8 = 0x54;
/// `dst += imm`: BPF_ALU64 | BPF_ADD | BPF_K.
pub(super) const ADD64_K: u8 = 0x07;
/// `dst = imm` (sign-extended): BPF_ALU64 | BPF_MOV | BPF_K.
pub(super) const MOV64_K: u8 = 0xb7;
/// `dst = src`: BPF_ALU64 | BPF_MOV | BPF_X.
pub(super) const MOV64_X: u8 = 0xbf;
/// `dst = imm` (32-bit, zero-extended): BPF_ALU | BPF_MOV | BPF_K.
pub(super) const MOV32_K: u8 = 0xb4;
/// `dst = htobe16(dst)`: BPF_ALU | BPF_END | BPF_TO_BE, imm 16.
pub(super) const BE16: u8 = 0xdc;
/// `if dst == imm goto +off` (64-bit, imm sign-extended).
pub(super) const JEQ_K: u8 = 0x15;
/// `if dst != imm goto +off` (64-bit, imm sign-extended).
pub(super) const JNE_K: u8 = 0x55;
/// `if dst != src goto +off` (64-bit).
pub(super) const JNE_X: u8 = 0x5d;
/// `goto +off`: BPF_JMP | BPF_JA.
pub(super) const JA: u8 = 0x05;
/// `if (u32)dst == (u32)imm goto +off`: BPF_JMP32 | BPF_JEQ | BPF_K.
pub(super) const JEQ32_K: u8 = 0x16;
/// `if (u32)dst != (u32)imm goto +off`.
pub(super) const JNE32_K: u8 = 0x56;
/// `if (u32)dst < (u32)imm goto +off` (unsigned).
pub(super) const JLT32_K: u8 = 0xa6;
/// `if (u32)dst <= (u32)imm goto +off` (unsigned).
pub(super) const JLE32_K: u8 = 0xb6;
/// Calls helper `imm`: arguments in r1–r5, result in r0, r1–r5 clobbered.
pub(super) const CALL: u8 = 0x85;
/// BPF_JMP | BPF_EXIT.
pub(super) const EXIT: u8 = 0x95;

/// A jump target in an [`Asm`] program.
#[derive(Debug, Clone, Copy)]
pub(super) struct Label(usize);

/// Instructions with jumps to labels, resolved by [`Asm::finish`].
#[derive(Debug, Default)]
pub(super) struct Asm {
    code: Vec<Insn>,
    labels: Vec<Option<usize>>,
    jumps: Vec<(usize, Label)>,
}

impl Asm {
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Puts `label` at the next instruction.
    pub fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.code.len());
    }

    pub fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.code.push(insn(code, dst, src, off, imm));
    }

    /// A conditional jump (`code` a jump opcode) to `to`.
    pub fn jump(&mut self, code: u8, dst: u8, imm: i32, to: Label) {
        self.jumps.push((self.code.len(), to));
        self.op(code, dst, 0, 0, imm);
    }

    /// A jump comparing two registers (`code` an X-form jump) to `to`.
    pub fn jump_reg(&mut self, code: u8, dst: u8, src: u8, to: Label) {
        self.jumps.push((self.code.len(), to));
        self.op(code, dst, src, 0, 0);
    }

    /// `goto to`.
    pub fn goto(&mut self, to: Label) {
        self.jump(JA, 0, 0, to);
    }

    /// `dst = value`, all 64 bits.
    pub fn ld_imm64(&mut self, dst: u8, value: u64) {
        self.op(LD_IMM64, dst, 0, 0, value as u32 as i32);
        self.op(0, 0, 0, 0, (value >> 32) as u32 as i32);
    }

    /// `r0 = value; exit`.
    pub fn ret(&mut self, value: i32) {
        self.op(MOV64_K, 0, 0, 0, value);
        self.op(EXIT, 0, 0, 0, 0);
    }

    /// The program, every jump pointing at its label.
    pub fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.jumps {
            let target = self.labels[label.0].expect("every label is bound");
            self.code[at].off = i16::try_from(target as i64 - at as i64 - 1).expect("a jump within 32k");
        }
        self.code
    }
}

// `bpf(2)` commands (`linux/bpf.h`).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
#[cfg(test)]
const BPF_PROG_QUERY: libc::c_long = 16;

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type` (the
/// kernel takes a prefix of the union and zeroes the rest).
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
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH and BPF_PROG_DETACH.
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

/// A program to load: its type, the attach type it is checked for (0 where
/// the type has one only), a name for `bpftool` (at most 15 bytes).
pub(super) struct Program<'a> {
    pub prog_type: u32,
    pub attach_type: u32,
    pub name: &'a str,
    pub insns: &'a [Insn],
}

/// Loads `p`; the verifier's log is in the error.
pub(super) fn load(p: &Program) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut name = [0u8; 16];
    let len = p.name.len().min(15);
    name[..len].copy_from_slice(&p.name.as_bytes()[..len]);
    let mut attr = ProgLoad {
        prog_type: p.prog_type,
        insn_cnt: p.insns.len() as u32,
        insns: p.insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type: p.attach_type,
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

/// Loads `p` and attaches it to the v2 cgroup `dir`, for it and every
/// cgroup below it. Attached without flags, so nothing below may attach
/// another in its place, and a second attach (a restarted agent) replaces
/// the first at once, never leaving the cgroups under `dir` without one.
/// The kernel keeps the program while the cgroup exists. `what` names the
/// program in errors.
pub(super) fn attach(dir: &Path, p: &Program, what: &str) -> Result<(), CgroupError> {
    let prog = load(p).map_err(CgroupError::io(format!("load {what} (eBPF) for"), dir))?;
    let cgroup = std::fs::File::open(dir).map_err(CgroupError::io("open", dir))?;
    let mut attr = ProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: p.attach_type,
        attach_flags: 0,
    };
    // EPERM here: a program of the kind attached above or here by another
    // manager (systemd attaches with BPF_F_ALLOW_MULTI) that does not let
    // this one in; `--cgroup-parent` chooses another place.
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(CgroupError::io(
        format!("attach {what} (eBPF; EPERM: another manager's program of the kind is attached here or above) to"),
        dir,
    ))?;
    Ok(())
}

/// Detaches the program of `attach_type` from `dir`, if one is attached.
pub(super) fn detach(dir: &Path, attach_type: u32) -> Result<(), CgroupError> {
    let cgroup = std::fs::File::open(dir).map_err(CgroupError::io("open", dir))?;
    let mut attr = ProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        ..Default::default()
    };
    match bpf(BPF_PROG_DETACH, &mut attr) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(CgroupError::io("detach an eBPF program from", dir)(e)),
    }
}

/// How many programs of `attach_type` are attached to `dir` itself.
#[cfg(test)]
pub(super) fn attached(dir: &Path, attach_type: u32) -> io::Result<u32> {
    let cgroup = std::fs::File::open(dir)?;
    let mut ids = [0u32; 16];
    let mut attr = ProgQuery {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    Ok(attr.prog_cnt)
}
