//! Classic BPF for seccomp: the few instructions den's filters use, and
//! installing a program on the calling process.

use std::mem::offset_of;

pub type Instruction = libc::sock_filter;

/// The audit tag of the architecture den runs on; syscalls made through
/// another ABI (i386's `int 0x80` on x86_64) carry a different one.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_ARCH: Option<u32> = Some(0xc000_003e); // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
pub const NATIVE_ARCH: Option<u32> = Some(0xc000_00b7); // AUDIT_ARCH_AARCH64
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const NATIVE_ARCH: Option<u32> = None;

/// Loads the syscall's architecture tag.
pub fn load_arch() -> Instruction {
    load(offset_of!(libc::seccomp_data, arch))
}

/// Loads the syscall's number.
pub fn load_nr() -> Instruction {
    load(offset_of!(libc::seccomp_data, nr))
}

/// Loads the low 32 bits of argument `arg` (ids, flags and personalities
/// are 32-bit).
pub fn load_arg_low(arg: usize) -> Instruction {
    let high_first = usize::from(cfg!(target_endian = "big")) * 4;
    load(offset_of!(libc::seccomp_data, args) + arg * 8 + high_first)
}

fn load(offset: usize) -> Instruction {
    statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset as u32)
}

pub fn ret(action: u32) -> Instruction {
    statement(libc::BPF_RET | libc::BPF_K, action)
}

/// Fails the syscall with `errno` (0: "succeeds" without running).
pub fn ret_errno(errno: i32) -> Instruction {
    ret(libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA))
}

fn statement(code: u32, k: u32) -> Instruction {
    Instruction {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Compares the accumulator with `k`; skips `if_true` or `if_false`
/// instructions.
pub fn jump_if_equal(k: u32, if_true: u8, if_false: u8) -> Instruction {
    jump(libc::BPF_JEQ, k, if_true, if_false)
}

/// As `jump_if_equal`, for accumulator > `k` (unsigned).
pub fn jump_if_greater(k: u32, if_true: u8, if_false: u8) -> Instruction {
    jump(libc::BPF_JGT, k, if_true, if_false)
}

fn jump(op: u32, k: u32, if_true: u8, if_false: u8) -> Instruction {
    Instruction {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        jt: if_true,
        jf: if_false,
        k,
    }
}
