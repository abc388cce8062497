//! `den logout <registry>`: remove a registry's credentials from every
//! file den reads, and from the credential helpers they name. Logging
//! out of a registry with no credentials says so and succeeds (as
//! docker does).

use anyhow::Result;

use crate::image::registry::login;

pub fn execute(registry: &str) -> Result<i32> {
    let host = login::registry_host(registry)?;
    let removed = login::erase(&host)?;
    if removed.is_empty() {
        println!("Not logged in to {host}");
    }
    for place in removed {
        println!("Removed credentials for {host} from {place}");
    }
    Ok(0)
}
