//! From a project's container and a command line to a running container:
//! gets the image from `build` (built or pulled as needed), composes the
//! environment, working directory and binds, translates den.yaml's
//! settings into a `userns::Spec` and hands it to the runtime.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::config::{Container, Network, Project};
use crate::context::Context;
use crate::image::Image;
use crate::userns::{self, Command, Mode, Spec};

/// What to run and how, beyond the container's own settings.
pub struct Request<'a> {
    pub project: &'a Project,
    pub container: &'a str,
    pub argv: Vec<String>,
    /// Extra variables; later entries win over the container's.
    pub environ: Vec<(String, String)>,
    pub net: NetChoice,
    /// The host directory den was started in.
    pub cwd: &'a Path,
    /// Descriptors 3 to 3+N-1 are passed on to the command.
    pub preserved_fds: u32,
}

/// The network a request asks for, over the container's.
#[derive(Debug, Clone, Default)]
pub struct NetChoice {
    /// `None`: the container's `network`.
    pub network: Option<Network>,
    /// Published ports (`network: slirp` only).
    pub ports: Vec<crate::net::PortSpec>,
}

/// Runs the request and returns the command's exit status.
pub fn run(ctx: &Context, request: Request<'_>) -> Result<i32> {
    let container = request
        .project
        .config
        .containers
        .get(request.container)
        .with_context(|| format!("den.yaml has no container `{}`", request.container))?;
    check_preserved_fds(request.preserved_fds)?;
    let store = ctx.store()?;
    // Held until the container exits: `den gc` must not remove its
    // layers. Close-on-exec: no program in the container inherits it
    // (the container's init, a clone of den, holds a copy until it ends).
    let _store_lock = store.lock_shared()?;
    let image = crate::build::image(
        ctx,
        request.project,
        request.container,
        crate::build::Options::default(),
    )?;
    let argv = match request.argv.is_empty() {
        true => default_argv(&image)?,
        false => request.argv.clone(),
    };
    let network = request.net.network.unwrap_or(container.network);
    if !request.net.ports.is_empty() && network != Network::Slirp {
        anyhow::bail!(
            "published ports need `--network slirp` (the container's network is `{network}`)"
        );
    }
    let tty = userns::stdio_is_terminal();
    let terminal = tty.then(|| ctx.env.term.as_deref().unwrap_or("xterm"));
    let mut environ = crate::build::proxy_env(&ctx.env.proxies);
    let mut binds = Vec::new();
    if container.host_ca
        && let Some((bind, vars)) = crate::build::ca_bind_and_env(ctx.env.ssl_cert_file.as_deref())
    {
        binds.push(bind);
        environ.extend(vars);
    }
    environ.extend(request.environ.iter().cloned());
    let spec = Spec {
        layers: image.layers.clone(),
        scratch: store.scratch_dir()?,
        cwd: working_dir(container, &request.project.root, request.cwd),
        argv,
        env: environment(&image, container, &environ, terminal),
        hostname: request.container.to_string(),
        network: network.runtime(request.net.ports.clone(), container.host_loopback),
        binds,
        confinement: container.confinement,
        mode: Mode::Command(Command {
            work: request.project.root.clone(),
            user: container.user.into(),
            tty,
            preserved_fds: request.preserved_fds,
        }),
    };
    userns::run(&spec)
}

/// `--preserve-fds N` passes descriptors 3 to 3+N-1, which must be open.
fn check_preserved_fds(count: u32) -> Result<()> {
    let last = 3 + i64::from(count) - 1;
    match (3..=last).find(|&fd| !userns::is_open_fd(fd as i32)) {
        Some(fd) => anyhow::bail!(
            "--preserve-fds {count} passes descriptors 3 to {last}, but descriptor {fd} is not open"
        ),
        None => Ok(()),
    }
}

/// The image's own entrypoint and command, as `docker run <image>` does.
fn default_argv(image: &Image) -> Result<Vec<String>> {
    let argv: Vec<String> = image
        .config
        .entrypoint
        .iter()
        .chain(&image.config.cmd)
        .cloned()
        .collect();
    anyhow::ensure!(
        !argv.is_empty(),
        "the image sets no command; name one after `--`"
    );
    Ok(argv)
}

/// The container's `workdir`, else the caller's place in the project
/// under /work (the project root when the caller is outside it).
fn working_dir(container: &Container, root: &Path, cwd: &Path) -> String {
    if let Some(workdir) = &container.workdir {
        return workdir.clone();
    }
    match cwd.strip_prefix(root) {
        Ok(relative) if !relative.as_os_str().is_empty() => {
            format!("/work/{}", relative.to_string_lossy())
        }
        _ => "/work".to_string(),
    }
}

/// A clean environment: the image's, then the container's, then the
/// request's; TERM (`terminal`: den's own, else xterm) only when the
/// command gets a terminal. PATH and HOME
/// are filled in by the runtime when nothing sets them.
fn environment(
    image: &Image,
    container: &Container,
    extra: &[(String, String)],
    terminal: Option<&str>,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = image
        .config
        .env
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (entry.clone(), String::new()),
        })
        .collect();
    if let Some(term) = terminal {
        set(&mut env, "TERM", term.to_string());
    }
    for (name, value) in container
        .environ
        .iter()
        .chain(extra.iter().map(|(n, v)| (n, v)))
    {
        set(&mut env, name, value.clone());
    }
    env.into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

fn set(env: &mut Vec<(String, String)>, name: &str, value: String) {
    match env.iter_mut().find(|(existing, _)| existing == name) {
        Some(entry) => entry.1 = value,
        None => env.push((name.to_string(), value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::User;
    use crate::image::RuntimeConfig;

    fn container(workdir: Option<&str>) -> Container {
        Container {
            from: crate::config::Base::Image(
                crate::image::Source::parse("oci:img", Path::new("/p")).unwrap(),
            ),
            from_at: (1, 1),
            setup: Vec::new(),
            host_ca: true,
            network: Network::Slirp,
            host_loopback: false,
            environ: [
                ("A".to_string(), "container".to_string()),
                ("B".to_string(), "b".to_string()),
            ]
            .into_iter()
            .collect(),
            workdir: workdir.map(str::to_string),
            user: User::default(),
            confinement: Default::default(),
        }
    }

    fn image(env: &[&str]) -> Image {
        Image {
            id: "sha256:0".into(),
            layers: vec![],
            config: RuntimeConfig {
                env: env.iter().map(|e| e.to_string()).collect(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn working_dir_follows_the_caller_into_the_project() {
        let root = Path::new("/home/u/proj");
        assert_eq!(
            working_dir(&container(None), root, Path::new("/home/u/proj")),
            "/work"
        );
        assert_eq!(
            working_dir(&container(None), root, Path::new("/home/u/proj/src/a")),
            "/work/src/a"
        );
        assert_eq!(
            working_dir(&container(None), root, Path::new("/elsewhere")),
            "/work"
        );
        assert_eq!(
            working_dir(
                &container(Some("/app")),
                root,
                Path::new("/home/u/proj/src")
            ),
            "/app"
        );
    }

    #[test]
    fn environment_layers_image_container_then_command() {
        let extra = vec![("B".to_string(), "command".to_string())];
        let env = environment(
            &image(&["PATH=/img/bin", "A=image"]),
            &container(None),
            &extra,
            None,
        );
        assert_eq!(env, ["PATH=/img/bin", "A=container", "B=command"]);
    }

    #[test]
    fn term_only_with_a_terminal() {
        let env = environment(&image(&[]), &container(None), &[], Some("xterm"));
        assert!(env.iter().any(|e| e.starts_with("TERM=")));
        let env = environment(&image(&[]), &container(None), &[], None);
        assert!(!env.iter().any(|e| e.starts_with("TERM=")));
    }
}
