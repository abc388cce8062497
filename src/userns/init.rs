//! pid 1 of the container: lets go of den's descriptors and secrets, maps
//! ids, builds the root filesystem, starts the command, then reaps and
//! forwards signals until the command ends.

use anyhow::{Context, Result};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{
    Pid, Signal, WaitOptions, WaitStatus, kill_process, kill_process_group, wait,
};

use super::channel::Channel;
use super::failure::{AtStage, Failure, Stage};
use super::seccomp::FakeOwnership;
use super::{EXIT_DEN_FAILED, HostIds, Launch, Network, User, process, rootfs, slirp, tty};
use crate::sys::netif::bring_loopback_up;
use crate::sys::process::{close_all_except, close_fd, join_new_session_keyring, wipe_environment};
use crate::sys::signal::{SignalSet, read_signal};

/// Signals den passes on to the command: the ones a user or a CI runner
/// sends to stop, reload or resize a foreground job.
pub(super) const FORWARDED_SIGNALS: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// The signals the supervisor and init block and read from a signalfd.
pub(super) fn handled_signals() -> SignalSet {
    let mut signals = FORWARDED_SIGNALS.to_vec();
    signals.push(libc::SIGCHLD);
    SignalSet::of(&signals)
}

/// Init's entry point, right after clone. Never returns.
pub(super) fn main(launch: &Launch<'_>, channel: Channel, network: Option<Channel>) -> ! {
    let code = match set_up(launch, &channel, network) {
        Ok(code) => code,
        Err(failure) => {
            channel.send_failure(&failure);
            EXIT_DEN_FAILED
        }
    };
    std::process::exit(code)
}

/// Sets the container up, starts the command and sees it through;
/// returns its exit status.
fn set_up(
    launch: &Launch<'_>,
    channel: &Channel,
    network: Option<Channel>,
) -> Result<i32, Failure> {
    let spec = launch.spec;
    let signals = prepare_init(launch, channel, network.as_ref()).at(Stage::Other)?;
    map_ids(launch.host, spec.user()).at(Stage::IdMaps)?;
    hide_den().at(Stage::Other)?;
    if let Some(network) = &network {
        slirp::create_and_send_tun(network).at(Stage::Network)?;
    }
    if spec.network.is_own() {
        open_network_to_the_command(spec).at(Stage::Network)?;
    }
    rootfs::build(spec)?;
    if spec.network == Network::None {
        bring_loopback_up()
            .context("bringing up the loopback interface")
            .at(Stage::Network)?;
    }
    start_and_supervise(launch, channel, network, &signals).at(Stage::Other)
}

/// Init's own footing: it dies with den, holds only the descriptors it
/// needs, and reads signals from a signalfd.
fn prepare_init(
    launch: &Launch<'_>,
    channel: &Channel,
    network: Option<&Channel>,
) -> Result<OwnedFd> {
    // Die with den. If den died before this line, the channel's hang-up
    // below catches it.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .context("setting the parent-death signal")?;
    keep_only_needed_descriptors(launch.spec, channel, network)?;
    handled_signals().signalfd().context("creating a signalfd")
}

fn start_and_supervise(
    launch: &Launch<'_>,
    channel: &Channel,
    network: Option<Channel>,
    signals: &OwnedFd,
) -> Result<i32> {
    let spec = launch.spec;
    rustix::system::sethostname(spec.hostname.as_bytes()).context("setting the hostname")?;
    let terminal = match spec.tty() {
        true => Some(tty::open_in_container(launch.winsize)?),
        false => None,
    };
    // On init itself, so that the command and all it starts inherit it.
    // From here on init must not call chown or set*id (see seccomp/ownership.rs).
    let fake_ownership = match spec.build_step() {
        Some(_) => Some(FakeOwnership::install()?),
        None => None,
    };
    let command = process::spawn(launch, terminal.as_ref().map(|t| t.slave.as_c_str()))?;
    // The command has its copies.
    for fd in spec
        .output()
        .into_iter()
        .chain(3..3 + spec.preserved_fds() as RawFd)
    {
        close_fd(fd).context("closing the command's descriptors")?;
    }
    if let Some(terminal) = terminal {
        channel
            .send_terminal(rustix::fd::AsFd::as_fd(&terminal.master))
            .context("handing the terminal to den")?;
    }
    supervise_command(command, signals, channel, fake_ownership, network)
}

/// Closes every descriptor den had open at the clone (the store lock,
/// build directories, the caller's own) but stdio, init's channels and,
/// until the command has its copies, those meant for it.
fn keep_only_needed_descriptors(
    spec: &super::Spec,
    channel: &Channel,
    network: Option<&Channel>,
) -> Result<()> {
    let channels: Vec<RawFd> = std::iter::once(channel)
        .chain(network)
        .map(|channel| channel.as_fd().as_raw_fd())
        .collect();
    close_all_except(&needed_descriptors(spec, &channels)).context("closing den's descriptors")
}

/// Stdio, init's `channels`, and what the command gets: its output and
/// the descriptors passed on purpose.
fn needed_descriptors(spec: &super::Spec, channels: &[RawFd]) -> Vec<RawFd> {
    let mut keep: Vec<RawFd> = vec![0, 1, 2];
    keep.extend(channels);
    keep.extend(spec.output());
    keep.extend(3..3 + spec.preserved_fds() as RawFd);
    keep
}

/// Init holds a copy of den's memory: its environment (tokens and all)
/// is wiped, and init becomes non-dumpable, so that nothing in the
/// container can read its memory, environment or descriptors through
/// /proc or ptrace (that now takes CAP_SYS_PTRACE over the host's user
/// namespace). After the id maps: a non-dumpable process cannot write
/// its own. Then a session keyring of its own.
fn hide_den() -> Result<()> {
    wipe_environment().context("wiping den's environment")?;
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("making init non-dumpable")?;
    join_new_session_keyring().context("joining a new session keyring")
}

/// The command runs in a user namespace nested in the one owning the
/// container's network namespace, so its NET_BIND_SERVICE and NET_RAW
/// do not reach the network. As Docker and podman set these sysctls for
/// their containers: ports below 1024 are open to every user when the
/// command holds NET_BIND_SERVICE, and the container user may ping
/// (ICMP echo sockets, no raw socket needed).
fn open_network_to_the_command(spec: &super::Spec) -> Result<()> {
    for (name, value) in network_sysctls(spec) {
        std::fs::write(format!("/proc/sys/net/ipv4/{name}"), value)
            .with_context(|| format!("setting net.ipv4.{name} in the container"))?;
    }
    Ok(())
}

/// The `net.ipv4` sysctls `open_network_to_the_command` sets.
fn network_sysctls(spec: &super::Spec) -> Vec<(&'static str, String)> {
    let mut sysctls = Vec::new();
    if spec
        .confinement
        .caps
        .contains(super::Capabilities::NET_BIND_SERVICE)
    {
        sysctls.push(("ip_unprivileged_port_start", "0".to_string()));
    }
    sysctls.push(("ping_group_range", format!("{0} {0}", spec.user().gid)));
    sysctls
}

/// Maps the invoking host user (and group) to the container user. An
/// unprivileged process may map exactly its own ids, and only after
/// giving up setgroups; no helper or /etc/subuid is involved.
fn map_ids(host: HostIds, user: User) -> Result<()> {
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text)
            .with_context(|| format!("writing /proc/self/{file}"))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{} {} 1", user.uid, host.uid))?;
    write("gid_map", format!("{} {} 1", user.gid, host.gid))
}

/// Waits for the command, reaping every orphan that lands on pid 1,
/// passing signals on and answering chowns in builds, and returns the
/// command's exit status.
fn supervise_command(
    command: Pid,
    signals: &impl rustix::fd::AsFd,
    channel: &Channel,
    mut fake_ownership: Option<FakeOwnership>,
    mut network: Option<Channel>,
) -> Result<i32> {
    loop {
        let mut fds = vec![
            PollFd::new(signals, PollFlags::IN),
            // den never writes to init, so any readiness means it is gone.
            PollFd::new(channel, PollFlags::IN | PollFlags::RDHUP),
        ];
        // Optional sources after the two fixed ones: (network, chown).
        let network_at = network.as_ref().map(|channel| {
            fds.push(PollFd::new(channel, PollFlags::IN));
            fds.len() - 1
        });
        let chown_at = fake_ownership.as_ref().map(|fake| {
            fds.push(PollFd::new(fake, PollFlags::IN));
            fds.len() - 1
        });
        match poll(&mut fds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            result => result.context("waiting for signals")?,
        };
        if !fds[1].revents().is_empty() {
            return Ok(EXIT_DEN_FAILED);
        }
        let network_events = network_at.map(|at| fds[at].revents());
        let chown_events = chown_at.map(|at| fds[at].revents());
        drop(fds);
        if let (Some(channel), Some(events)) = (&network, network_events)
            && !events.is_empty()
            && !slirp::serve_socket_request(channel)
        {
            network = None;
        }
        if let (Some(fake), Some(events)) = (&fake_ownership, chown_events)
            && !serve_chown(fake, events)
        {
            fake_ownership = None;
        }
        while let Some(signal) = read_signal(signals).context("reading a signal")? {
            if signal != libc::SIGCHLD {
                forward(command, signal);
            } else if let Some(status) = reap(command)? {
                return Ok(exit_code(status));
            }
        }
    }
}

/// Answers a chown of the command's when one is pending. False when the
/// listener is done: no filtered process is left, or it failed (chowns
/// then fail with ENOSYS, which is better than init dying).
fn serve_chown(fake: &FakeOwnership, events: PollFlags) -> bool {
    if !events.contains(PollFlags::IN) {
        return events.is_empty();
    }
    match fake.handle_one() {
        Ok(()) => true,
        Err(err) => {
            eprintln!("den: cannot fake file ownership any more, chown fails from now on: {err}");
            false
        }
    }
}

/// Sends a signal to the command's process group (as a terminal would),
/// or to the command alone if its group is gone.
fn forward(command: Pid, signal: libc::c_int) {
    // SAFETY: the number came from the kernel via signalfd.
    let signal = unsafe { Signal::from_raw_unchecked(signal) };
    if kill_process_group(command, signal).is_err() {
        let _ = kill_process(command, signal);
    }
}

/// Reaps every exited child; returns the command's status once it ended.
fn reap(command: Pid) -> Result<Option<WaitStatus>> {
    loop {
        match wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) if pid == command => return Ok(Some(status)),
            Ok(Some(_)) => continue,
            Ok(None) | Err(rustix::io::Errno::CHILD) => return Ok(None),
            Err(err) => return Err(err).context("reaping children"),
        }
    }
}

/// The shell's convention: the exit code, or 128+N for death by signal N.
pub(super) fn exit_code(status: WaitStatus) -> i32 {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => EXIT_DEN_FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userns::{Command, Confinement, Mode, Spec};
    use std::path::PathBuf;

    fn command(user: User, preserved_fds: u32, confinement: Confinement) -> Spec {
        Spec {
            layers: Vec::new(),
            scratch: PathBuf::from("/s"),
            cwd: "/work".into(),
            argv: vec!["true".into()],
            env: Vec::new(),
            hostname: "dev".into(),
            network: Network::None,
            binds: Vec::new(),
            confinement,
            mode: Mode::Command(Command {
                work: PathBuf::from("/p"),
                user,
                tty: false,
                preserved_fds,
            }),
        }
    }

    #[test]
    fn init_keeps_stdio_its_channels_and_what_the_command_gets() {
        let spec = command(User::ROOT, 2, Confinement::default());
        assert_eq!(needed_descriptors(&spec, &[9, 12]), [0, 1, 2, 9, 12, 3, 4]);
        let spec = command(User::ROOT, 0, Confinement::default());
        assert_eq!(needed_descriptors(&spec, &[9]), [0, 1, 2, 9]);
    }

    #[test]
    fn low_ports_open_only_with_net_bind_service_and_ping_for_the_users_group() {
        let user = User {
            uid: 1000,
            gid: 100,
        };
        let spec = command(user, 0, Confinement::default());
        assert_eq!(
            network_sysctls(&spec),
            [
                ("ip_unprivileged_port_start", "0".to_string()),
                ("ping_group_range", "100 100".to_string())
            ]
        );
        let mut confinement = Confinement::default();
        confinement
            .caps
            .remove(crate::userns::Capabilities::NET_BIND_SERVICE);
        let spec = command(user, 0, confinement);
        assert_eq!(
            network_sysctls(&spec),
            [("ping_group_range", "100 100".to_string())]
        );
    }
}
