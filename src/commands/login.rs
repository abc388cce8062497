//! `den login [--username U] [--password-stdin] <registry>`: check a user
//! name and password against a registry (`GET /v2/`, Basic or token
//! auth) and save them where den, podman and docker look; nothing is
//! saved when the registry refuses them. See docs/registry.md.

use std::io::{Read, Write};

use anyhow::{Context as _, Result, bail};
use rustix::termios::{
    LocalModes, OptionalActions, SpecialCodeIndex, Termios, isatty, tcgetattr, tcsetattr,
};

use crate::context::Context;
use crate::image::registry::login;

pub fn execute(
    ctx: &Context,
    registry: &str,
    username: Option<&str>,
    password_stdin: bool,
) -> Result<i32> {
    let host = login::registry_host(registry)?;
    let terminal = isatty(rustix::stdio::stdin());
    let username = match username {
        Some(name) => name.to_string(),
        None if password_stdin => {
            bail!("--password-stdin needs --username (stdin holds the password)")
        }
        None if terminal => prompt_line("Username: ")?,
        None => bail!(
            "no terminal to ask for the user name: give --username, and the password on stdin \
             with --password-stdin"
        ),
    };
    if username.is_empty() {
        bail!("the user name is empty");
    }
    if username.contains(':') {
        bail!("a user name cannot contain `:`");
    }
    let password = if password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the password from stdin")?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        text.strip_suffix('\r').unwrap_or(text).to_string()
    } else if terminal {
        prompt_hidden("Password: ")?
    } else {
        bail!("no terminal to ask for the password: pipe it to `den login --password-stdin`");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    login::verify(&host, &username, &password, &ctx.store_environment())
        .with_context(|| format!("cannot log in to {host}"))?;
    let place = login::save(&host, &username, &password)
        .with_context(|| format!("cannot save the credentials for {host}"))?;
    for earlier in login::shadowing(&host, &place) {
        eprintln!(
            "den: note: {} also has credentials for {host}, and den reads it first",
            earlier.display()
        );
    }
    println!("Login succeeded for {host}");
    Ok(0)
}

/// Asks on the terminal (stdin) with echo, one line.
fn prompt_line(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8];
        match rustix::io::read(rustix::stdio::stdin(), &mut byte) {
            Ok(0) => bail!("no user name given"),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err).context("cannot read from the terminal"),
        }
    }
    let text = String::from_utf8(line).context("the user name is not UTF-8")?;
    Ok(text.trim_end_matches('\r').trim().to_string())
}

/// Restores the terminal's mode when dropped, on every way out.
struct Restore(Termios);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, &self.0);
    }
}

/// Asks on the terminal without echo. Echo, line editing and signal keys
/// are off while reading, so Ctrl-C arrives as a byte and cancels here,
/// after the terminal is restored (no signal can leave echo off).
fn prompt_hidden(prompt: &str) -> Result<String> {
    let stdin = rustix::stdio::stdin();
    let saved = tcgetattr(stdin).context("cannot read the terminal's mode")?;
    // A code of 0 is a disabled key (_POSIX_VDISABLE).
    let code = |index: SpecialCodeIndex| Some(saved.special_codes[index]).filter(|c| *c != 0);
    let (intr, quit, erase, kill, eof) = (
        code(SpecialCodeIndex::VINTR),
        code(SpecialCodeIndex::VQUIT),
        code(SpecialCodeIndex::VERASE),
        code(SpecialCodeIndex::VKILL),
        code(SpecialCodeIndex::VEOF),
    );
    let mut quiet = saved.clone();
    quiet
        .local_modes
        .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG);
    quiet.special_codes[SpecialCodeIndex::VMIN] = 1;
    quiet.special_codes[SpecialCodeIndex::VTIME] = 0;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let restore = Restore(saved);
    tcsetattr(stdin, OptionalActions::Now, &quiet).context("cannot turn off echo")?;
    let mut line = Vec::new();
    let outcome = loop {
        let mut byte = [0u8];
        match rustix::io::read(stdin, &mut byte) {
            Ok(0) => break Err("no password given"),
            Ok(_) => match byte[0] {
                b'\r' | b'\n' => break Ok(()),
                c if Some(c) == intr || Some(c) == quit || c == 3 => {
                    break Err("login cancelled");
                }
                c if Some(c) == eof && line.is_empty() => break Err("no password given"),
                c if Some(c) == erase || c == 0x7f || c == 8 => {
                    // A whole UTF-8 character.
                    while line.pop().is_some_and(|b| b & 0xc0 == 0x80) {}
                }
                c if Some(c) == kill || c == 0x15 => line.clear(),
                c => line.push(c),
            },
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break Err("cannot read from the terminal"),
        }
    };
    drop(restore);
    eprintln!();
    if let Err(reason) = outcome {
        bail!(reason);
    }
    String::from_utf8(line).context("the password is not UTF-8")
}
