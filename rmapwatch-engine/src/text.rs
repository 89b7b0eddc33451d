//! Text that reaches a terminal. Process names (`prctl(PR_SET_NAME)`), file
//! names, and everything a remote agent or a phone sends are chosen by
//! someone else, and may hold escape sequences (clear the screen, retitle
//! the window, rewrite what was printed). Text outputs show them as `ps`
//! does: each control character as `?`. JSON stays exact (serde escapes
//! control characters).
use std::{borrow::Cow, fmt};

/// Whether `c` must not reach a terminal: C0 controls, DEL and C1
/// controls (`ESC`, `BEL`, `CR`, newline, `CSI` ...).
#[must_use]
pub fn is_control(c: char) -> bool {
    c.is_control()
}

/// `s` with every control character (newlines too) as `?`, as `ps` shows
/// a process name: for one field of a line.
#[must_use]
pub fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| if is_control(c) { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// A whole text output: every control character but the newlines (and
/// tabs) that lay it out as `?`. The last guard before stdout or stderr:
/// the fields that can hold newlines of their own (names, paths) are
/// [`printable`] already.
#[must_use]
pub fn printable_lines(s: &str) -> Cow<'_, str> {
    let bad = |c: char| is_control(c) && c != '\n' && c != '\t';
    if s.chars().any(bad) {
        Cow::Owned(s.chars().map(|c| if bad(c) { '?' } else { c }).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// Displays a string as [`printable`] does, without allocating.
#[derive(Clone, Copy, Debug)]
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Through the padding of `{:<16}`: format the cleaned text.
        f.pad(&printable(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "a\x1b[2Jb\x07c\rd\ne\u{9b}f\x7f";

    #[test]
    fn control_characters_are_shown_as_question_marks() {
        assert_eq!(printable(HOSTILE), "a?[2Jb?c?d?e?f?");
        assert_eq!(printable("firefox"), "firefox");
        assert!(matches!(printable("ok"), Cow::Borrowed(_)));
        // Printable text of other scripts is left alone.
        assert_eq!(printable("café – ünïcode"), "café – ünïcode");
    }

    #[test]
    fn whole_outputs_keep_their_own_lines() {
        assert_eq!(printable_lines("a\tb\nc\x1b]0;x\x07\n"), "a\tb\nc?]0;x?\n");
    }

    #[test]
    fn padding_applies_to_the_cleaned_name() {
        assert_eq!(format!("[{:<6}]", Printable("a\x1bb")), "[a?b   ]");
        assert_eq!(format!("[{:>4}]", Printable("x")), "[   x]");
    }
}
