//! `den rmi <image>…`: remove images from the store by reference
//! (`name:tag`, an `oci:` source) or ID prefix. Only names and image
//! records go; `den gc` frees their layers.

use anyhow::Result;

use crate::context::Context;

pub fn execute(ctx: &Context, images: &[String]) -> Result<i32> {
    let store = ctx.store()?;
    let mut failed = false;
    for image in images {
        match store.remove_image(image) {
            Ok(id) => println!("removed {image} ({})", super::update::short(&id)),
            Err(err) => {
                eprintln!("den: {err:#}");
                failed = true;
            }
        }
    }
    if failed {
        anyhow::bail!("some images were not removed");
    }
    Ok(0)
}
