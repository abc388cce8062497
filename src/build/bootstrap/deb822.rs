//! Debian control files (deb822): paragraphs of `Name: value` fields,
//! read without copying so a 50 MB `Packages` file parses quickly.

/// One paragraph (stanza): its fields in file order.
#[derive(Debug)]
pub struct Paragraph<'a> {
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Paragraph<'a> {
    /// The value of `field` (name compared case-insensitively), trimmed at
    /// both ends; a multi-line value keeps its continuation lines as written.
    pub fn get(&self, field: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(field))
            .map(|&(_, value)| value)
    }
}

/// The paragraphs of `text`, split on blank (or whitespace-only) lines.
/// Lines starting with `#` are comments, except between a value's
/// continuation lines, where they stay in the value (values are slices of
/// `text`). Lines that are neither a field nor a continuation are skipped
/// (files written by the archive have none).
pub fn paragraphs(text: &str) -> impl Iterator<Item = Paragraph<'_>> {
    Paragraphs { text, pos: 0 }
}

struct Paragraphs<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Paragraphs<'a> {
    /// The next line (without its `\n` or `\r\n`) and the offset of its start.
    fn line(&mut self) -> Option<(usize, &'a str)> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let rest = &self.text[start..];
        let (line, advance) = match rest.find('\n') {
            Some(end) => (&rest[..end], end + 1),
            None => (rest, rest.len()),
        };
        self.pos += advance;
        Some((start, line.strip_suffix('\r').unwrap_or(line)))
    }
}

impl<'a> Iterator for Paragraphs<'a> {
    type Item = Paragraph<'a>;

    fn next(&mut self) -> Option<Paragraph<'a>> {
        let text = self.text;
        // Room for nearly every Packages stanza's fields without regrowing,
        // small enough for malloc's per-thread cache.
        let mut fields = Vec::with_capacity(24);
        // The field being read: its name and the span of its value so far,
        // which grows over continuation lines (one slice of `text`).
        let mut open: Option<(&'a str, usize, usize)> = None;
        while let Some((start, line)) = self.line() {
            let first = line.as_bytes().first().copied();
            match first {
                None => {}
                Some(b'#') => continue,
                Some(b' ' | b'\t') if !line.trim_ascii().is_empty() => {
                    if let Some((_, _, end)) = &mut open {
                        *end = start + line.len();
                    }
                    continue;
                }
                Some(b' ' | b'\t') => {}
                Some(_) => {
                    close(text, &mut open, &mut fields);
                    if let Some(colon) = line.find(':') {
                        let value = start + colon + 1;
                        open = Some((line[..colon].trim_ascii_end(), value, start + line.len()));
                    }
                    continue;
                }
            }
            // A blank line: the end of a paragraph, if one has started.
            close(text, &mut open, &mut fields);
            if !fields.is_empty() {
                return Some(Paragraph { fields });
            }
        }
        close(text, &mut open, &mut fields);
        (!fields.is_empty()).then_some(Paragraph { fields })
    }
}

fn close<'a>(
    text: &'a str,
    open: &mut Option<(&'a str, usize, usize)>,
    fields: &mut Vec<(&'a str, &'a str)>,
) {
    if let Some((name, start, end)) = open.take() {
        fields.push((name, text[start..end].trim_ascii()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paragraphs_and_reads_fields() {
        let text = "# a comment\nPackage: a\nVersion: 1.0\n\n\n \nPackage: b\r\nversion:2\r\n";
        let all: Vec<_> = paragraphs(text).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].get("Package"), Some("a"));
        assert_eq!(all[0].get("VERSION"), Some("1.0"));
        assert_eq!(all[1].get("package"), Some("b"));
        assert_eq!(all[1].get("Version"), Some("2"));
        assert_eq!(all[1].get("Depends"), None);
    }

    #[test]
    fn continuation_lines_stay_in_the_value() {
        let text = "SHA256:\n 00 1 a\n 11 2 b\nDescription: short\n long line\n .\n more\nZ: z";
        let all: Vec<_> = paragraphs(text).collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].get("SHA256"), Some("00 1 a\n 11 2 b"));
        assert_eq!(
            all[0].get("Description"),
            Some("short\n long line\n .\n more")
        );
        assert_eq!(all[0].get("Z"), Some("z"));
    }

    #[test]
    fn comments_do_not_split_or_start_paragraphs() {
        let text = "A: 1\n# inside\nB: 2\n\n# only a comment\n\n";
        let all: Vec<_> = paragraphs(text).collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].get("B"), Some("2"));
    }

    #[test]
    fn empty_input_has_no_paragraphs() {
        assert_eq!(paragraphs("").count(), 0);
        assert_eq!(paragraphs("\n\n  \n").count(), 0);
    }
}
