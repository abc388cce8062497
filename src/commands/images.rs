//! `den images`: the images in the store, one line per name.

use anyhow::Result;

use crate::context::Context;
use crate::image::progress::human_size;

pub fn execute(ctx: &Context) -> Result<i32> {
    let store = ctx.store()?;
    let images = store.list_images()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rows: Vec<[String; 5]> = images
        .iter()
        .map(|image| {
            [
                image.repository.clone(),
                image.tag.clone(),
                super::update::short(&image.id).to_string(),
                image.size.map_or("-".into(), human_size),
                image
                    .used
                    .map_or("never".into(), |used| ago(now.saturating_sub(used))),
            ]
        })
        .collect();
    let header = ["REPOSITORY", "TAG", "ID", "SIZE", "LAST USED"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(0)
}

fn ago(seconds: u64) -> String {
    let (value, unit) = match seconds {
        0..60 => return "just now".into(),
        60..3600 => (seconds / 60, "minute"),
        3600..86400 => (seconds / 3600, "hour"),
        _ => (seconds / 86400, "day"),
    };
    let plural = if value == 1 { "" } else { "s" };
    format!("{value} {unit}{plural} ago")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(ago(5), "just now");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(7200), "2 hours ago");
        assert_eq!(ago(3 * 86400), "3 days ago");
        assert_eq!(human_size(1500), "1.5 kB");
    }
}
