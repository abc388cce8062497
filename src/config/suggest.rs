//! "Did you mean" hints for misspelt keys and names.

/// The candidate `word` was most likely meant to be, if any is close enough
/// to be a plausible typo. `aliases` maps spellings other tools use (such as
/// `image` or `cmd`) to our key, since edit distance cannot find those.
pub(super) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    aliases: &[(&str, &'a str)],
) -> Option<&'a str> {
    if let Some((_, key)) = aliases
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(word))
    {
        return Some(key);
    }
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let lower = candidate.to_lowercase();
            let distance = distance(&word, &lower);
            let close = distance <= (word.chars().count() / 3).max(1);
            (close || is_stem(&word, &lower)).then_some((distance, candidate))
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// One word is the other with something added at the end (`env` and
/// `environ`, `environment` and `environ`): a clear intent whatever the
/// edit distance. Very short stems match too much to count.
fn is_stem(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.chars().count() >= 3 && long.starts_with(short)
}

/// Optimal string alignment distance: Levenshtein plus swapping two
/// adjacent characters as one edit, the commonest typo (`contianer`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["from", "environ", "workdir", "user"];

    #[test]
    fn distances() {
        assert_eq!(distance("comand", "command"), 1);
        assert_eq!(distance("contianer", "container"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn suggests_typos_stems_and_aliases() {
        let keys = || KEYS.iter().copied();
        assert_eq!(did_you_mean("form", keys(), &[]), Some("from"));
        assert_eq!(did_you_mean("environment", keys(), &[]), Some("environ"));
        assert_eq!(did_you_mean("env", keys(), &[]), Some("environ"));
        assert_eq!(did_you_mean("Workdir", keys(), &[]), Some("workdir"));
        assert_eq!(
            did_you_mean("image", keys(), &[("image", "from")]),
            Some("from")
        );
        assert_eq!(did_you_mean("volumes", keys(), &[]), None);
        assert_eq!(did_you_mean("x", keys(), &[]), None);
    }
}
