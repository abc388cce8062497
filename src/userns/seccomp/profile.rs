//! The default seccomp profile of commands and build steps: podman's
//! refusals (containers/common's default profile, read as the syscalls
//! it does not allow for its default capabilities), plus the keyring,
//! io_uring and the new mount API, which den refuses whatever the
//! capabilities. docs/runtime.md lists them.
//!
//! It is a deny list: everything else runs. Two things keep that safe
//! for kernels newer than this list: a syscall numbered above the newest
//! one reviewed fails with ENOSYS (as podman's default action does; libc
//! then falls back to an older call), and a syscall made through another
//! ABI (i386's `int 0x80`, x32) kills the process, since its numbers
//! mean other calls. Each rule's outcome depends on the syscall number
//! alone, so the kernel caches "allowed" for every other syscall and the
//! filter costs nothing on their path.

use std::io;

use super::bpf::{
    Instruction, jump_if_equal, jump_if_greater, load_arch, load_arg_low, load_nr, ret, ret_errno,
};
use crate::userns::caps::Capabilities;

/// The newest syscall this list was checked against: `file_setattr`,
/// Linux 6.17 (the same number on x86_64 and aarch64).
const NEWEST_REVIEWED: u32 = 469;
/// `open_tree_attr` (Linux 6.15), newer than the libc crate's tables.
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;

/// Syscalls refused with `errno` unless the command holds any of
/// `unless` (podman's conditions: the capability a syscall exists for).
struct Rule {
    calls: &'static [libc::c_long],
    errno: i32,
    unless: Capabilities,
}

const fn rule(calls: &'static [libc::c_long], errno: i32, unless: Capabilities) -> Rule {
    Rule {
        calls,
        errno,
        unless,
    }
}

const NEVER: Capabilities = Capabilities::empty();

const RULES: &[Rule] = &[
    // The kernel keyring: shared kernel state holding other processes'
    // secrets, and a long record of kernel bugs. ENOSYS reads as "no
    // keyring support", which programs handle.
    rule(
        &[libc::SYS_keyctl, libc::SYS_add_key, libc::SYS_request_key],
        libc::ENOSYS,
        NEVER,
    ),
    // io_uring bypasses seccomp for the operations it performs.
    rule(
        &[
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
        ],
        libc::ENOSYS,
        NEVER,
    ),
    // The new mount API (CVE-2022-0185 was fsconfig); mount(2), umount2
    // and pivot_root stay for nested containers, and util-linux falls
    // back to them on ENOSYS.
    rule(
        &[
            libc::SYS_fsopen,
            libc::SYS_fsconfig,
            libc::SYS_fsmount,
            libc::SYS_fspick,
            libc::SYS_open_tree,
            libc::SYS_move_mount,
            libc::SYS_mount_setattr,
            SYS_OPEN_TREE_ATTR,
        ],
        libc::ENOSYS,
        Capabilities::SYS_ADMIN,
    ),
    rule(
        &[
            libc::SYS_userfaultfd,
            libc::SYS_kexec_load,
            libc::SYS_kexec_file_load,
            libc::SYS_swapon,
            libc::SYS_swapoff,
            libc::SYS_vmsplice,
        ],
        libc::EPERM,
        NEVER,
    ),
    rule(
        &[
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_fanotify_init,
            libc::SYS_lookup_dcookie,
            libc::SYS_quotactl,
            libc::SYS_quotactl_fd,
            libc::SYS_sethostname,
            libc::SYS_setdomainname,
            libc::SYS_setns,
        ],
        libc::EPERM,
        Capabilities::SYS_ADMIN,
    ),
    rule(
        &[
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_process_madvise,
            libc::SYS_kcmp,
            libc::SYS_pidfd_getfd,
        ],
        libc::EPERM,
        Capabilities::SYS_PTRACE,
    ),
    rule(
        &[
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
        ],
        libc::EPERM,
        Capabilities::SYS_MODULE,
    ),
    rule(
        &[
            libc::SYS_mbind,
            libc::SYS_set_mempolicy,
            libc::SYS_get_mempolicy,
            libc::SYS_move_pages,
            libc::SYS_migrate_pages,
        ],
        libc::EPERM,
        Capabilities::SYS_NICE,
    ),
    rule(
        &[
            libc::SYS_settimeofday,
            libc::SYS_clock_settime,
            libc::SYS_clock_adjtime,
        ],
        libc::EPERM,
        Capabilities::SYS_TIME,
    ),
    rule(&[libc::SYS_acct], libc::EPERM, Capabilities::SYS_PACCT),
    rule(&[libc::SYS_reboot], libc::EPERM, Capabilities::SYS_BOOT),
    rule(
        &[libc::SYS_vhangup],
        libc::EPERM,
        Capabilities::SYS_TTY_CONFIG,
    ),
    rule(
        &[libc::SYS_open_by_handle_at],
        libc::EPERM,
        Capabilities::DAC_READ_SEARCH,
    ),
    #[cfg(target_arch = "x86_64")]
    rule(
        &[libc::SYS_iopl, libc::SYS_ioperm],
        libc::EPERM,
        Capabilities::SYS_RAWIO,
    ),
    // Obsolete interfaces no program needs.
    #[cfg(target_arch = "x86_64")]
    rule(
        &[
            libc::SYS_uselib,
            libc::SYS_ustat,
            libc::SYS_sysfs,
            libc::SYS__sysctl,
            libc::SYS_nfsservctl,
        ],
        libc::EPERM,
        NEVER,
    ),
];

/// `personality(2)` values podman allows: Linux, and the query; the
/// others (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE…) weaken the command's
/// own hardening.
const PERSONALITIES: [u32; 5] = [0x0, 0x0008, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Syscalls per leaf of the search: a short linear scan.
const LEAF: usize = 4;

/// What the profile does with one listed syscall.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Errno(i32),
    /// `personality`: allowed for `PERSONALITIES` only.
    Personality,
}

/// The profile for a command holding `caps`, on the architecture with
/// audit tag `arch`. The listed syscalls are found by a binary search on
/// their numbers: a dozen instructions a lookup, which matters most when
/// the kernel runs the program for every syscall number as it installs
/// it (to fill its cache), where a linear list took 0.15 ms.
pub fn program(arch: u32, caps: Capabilities) -> io::Result<Vec<Instruction>> {
    let mut listed: Vec<(u32, Verdict)> = RULES
        .iter()
        .filter(|rule| !caps.intersects(rule.unless))
        .flat_map(|rule| {
            rule.calls
                .iter()
                .map(|&call| (call as u32, Verdict::Errno(rule.errno)))
        })
        .chain([(libc::SYS_personality as u32, Verdict::Personality)])
        .collect();
    listed.sort_by_key(|&(nr, _)| nr);
    listed.dedup_by_key(|&mut (nr, _)| nr);
    let mut program = vec![
        load_arch(),
        jump_if_equal(arch, 1, 0),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
        load_nr(),
        jump_if_greater(NEWEST_REVIEWED, 0, 1),
        ret_errno(libc::ENOSYS),
    ];
    program.extend(search(&listed)?);
    Ok(program)
}

/// Instructions that end in the verdict of the syscall number in the
/// accumulator: `sorted`'s, or ALLOW for any other.
fn search(sorted: &[(u32, Verdict)]) -> io::Result<Vec<Instruction>> {
    if sorted.len() <= LEAF {
        let mut block = Vec::new();
        for &(nr, verdict) in sorted {
            let body = verdict_block(verdict);
            block.push(jump_if_equal(nr, 0, skip(body.len())?));
            block.extend(body);
        }
        block.push(ret(libc::SECCOMP_RET_ALLOW));
        return Ok(block);
    }
    let (low, high) = sorted.split_at(sorted.len() / 2);
    let (low_block, high_block) = (search(low)?, search(high)?);
    let mut block = vec![jump_if_greater(
        low[low.len() - 1].0,
        skip(low_block.len())?,
        0,
    )];
    block.extend(low_block);
    block.extend(high_block);
    Ok(block)
}

fn verdict_block(verdict: Verdict) -> Vec<Instruction> {
    match verdict {
        Verdict::Errno(errno) => vec![ret_errno(errno)],
        Verdict::Personality => {
            let allowed = PERSONALITIES.len() as u8;
            let mut block = vec![load_arg_low(0)];
            for (index, value) in PERSONALITIES.into_iter().enumerate() {
                // To the ALLOW after the refusal.
                block.push(jump_if_equal(value, allowed - index as u8, 0));
            }
            block.push(ret_errno(libc::EPERM));
            block.push(ret(libc::SECCOMP_RET_ALLOW));
            block
        }
    }
}

/// A jump over `len` instructions; classic BPF jumps are 8-bit.
fn skip(len: usize) -> io::Result<u8> {
    u8::try_from(len).map_err(|_| io::Error::other("the seccomp profile outgrew a BPF jump"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on one syscall, as the kernel would.
    fn verdict(program: &[Instruction], arch: u32, nr: libc::c_long, arg0: u64) -> u32 {
        let mut accumulator = 0u32;
        let mut pc = 0;
        loop {
            let insn = program[pc];
            let code = u32::from(insn.code);
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    accumulator = match insn.k as usize {
                        k if k == std::mem::offset_of!(libc::seccomp_data, arch) => arch,
                        k if k == std::mem::offset_of!(libc::seccomp_data, nr) => nr as u32,
                        k if k == std::mem::offset_of!(libc::seccomp_data, args) => arg0 as u32,
                        k => panic!("unexpected load at offset {k}"),
                    };
                    pc += 1;
                }
                c if c == libc::BPF_RET | libc::BPF_K => return insn.k,
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    let skip = if accumulator == insn.k {
                        insn.jt
                    } else {
                        insn.jf
                    };
                    pc += 1 + usize::from(skip);
                }
                c if c == libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K => {
                    let skip = if accumulator > insn.k {
                        insn.jt
                    } else {
                        insn.jf
                    };
                    pc += 1 + usize::from(skip);
                }
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    const ARCH: u32 = 0xc000_003e;

    fn errno(value: i32) -> u32 {
        libc::SECCOMP_RET_ERRNO | value as u32
    }

    #[test]
    fn refuses_the_listed_calls_and_allows_the_rest() {
        let program = program(ARCH, crate::userns::caps::DEFAULT).unwrap();
        let check = |nr, arg0| verdict(&program, ARCH, nr, arg0);
        assert_eq!(check(libc::SYS_keyctl, 0), errno(libc::ENOSYS));
        assert_eq!(check(libc::SYS_io_uring_setup, 0), errno(libc::ENOSYS));
        assert_eq!(check(libc::SYS_fsopen, 0), errno(libc::ENOSYS));
        assert_eq!(check(libc::SYS_bpf, 0), errno(libc::EPERM));
        assert_eq!(check(libc::SYS_ptrace, 0), errno(libc::EPERM));
        assert_eq!(check(libc::SYS_read, 0), libc::SECCOMP_RET_ALLOW);
        assert_eq!(check(libc::SYS_mount, 0), libc::SECCOMP_RET_ALLOW);
        assert_eq!(check(libc::SYS_unshare, 0), libc::SECCOMP_RET_ALLOW);
        assert_eq!(check(NEWEST_REVIEWED as _, 0), libc::SECCOMP_RET_ALLOW);
        assert_eq!(check(NEWEST_REVIEWED as i64 + 1, 0), errno(libc::ENOSYS));
        // An x32 syscall number.
        assert_eq!(check(0x4000_0000 | 39, 0), errno(libc::ENOSYS));
    }

    #[test]
    fn a_foreign_architecture_is_killed() {
        let program = program(ARCH, crate::userns::caps::DEFAULT).unwrap();
        const I386: u32 = 0x4000_0003;
        assert_eq!(
            verdict(&program, I386, 20, 0),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn personality_allows_only_podmans_values() {
        let program = program(ARCH, crate::userns::caps::DEFAULT).unwrap();
        let check = |arg0| verdict(&program, ARCH, libc::SYS_personality, arg0);
        for value in PERSONALITIES {
            assert_eq!(check(value.into()), libc::SECCOMP_RET_ALLOW, "{value:#x}");
        }
        // ADDR_NO_RANDOMIZE
        assert_eq!(check(0x0040000), errno(libc::EPERM));
    }

    #[test]
    fn capabilities_lift_their_rules() {
        let caps = crate::userns::caps::DEFAULT | Capabilities::SYS_PTRACE;
        let lifted = program(ARCH, caps).unwrap();
        let check = |nr| verdict(&lifted, ARCH, nr, 0);
        assert_eq!(check(libc::SYS_ptrace), libc::SECCOMP_RET_ALLOW);
        assert_eq!(check(libc::SYS_process_vm_readv), libc::SECCOMP_RET_ALLOW);
        assert_eq!(check(libc::SYS_bpf), errno(libc::EPERM));
        // Never lifted: the keyring.
        let all = program(ARCH, Capabilities::all()).unwrap();
        assert_eq!(
            verdict(&all, ARCH, libc::SYS_add_key, 0),
            errno(libc::ENOSYS)
        );
    }

    #[test]
    fn fits_the_kernels_jump_and_length_limits() {
        let program = program(ARCH, Capabilities::empty()).unwrap();
        assert!(program.len() < 4096);
    }

    #[test]
    fn every_listed_syscall_and_its_neighbours_get_their_verdicts() {
        let program = program(ARCH, Capabilities::empty()).unwrap();
        for rule in RULES {
            for &call in rule.calls {
                let got = verdict(&program, ARCH, call, 0);
                assert_eq!(got, errno(rule.errno), "syscall {call}");
            }
        }
        let listed: Vec<i64> = RULES
            .iter()
            .flat_map(|rule| rule.calls.iter().copied())
            .collect();
        for nr in 0..=i64::from(NEWEST_REVIEWED) {
            if !listed.contains(&nr) && nr != libc::SYS_personality {
                assert_eq!(
                    verdict(&program, ARCH, nr, 0),
                    libc::SECCOMP_RET_ALLOW,
                    "{nr}"
                );
            }
        }
    }
}
