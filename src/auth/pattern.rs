//! Topic patterns: what a token's `topics` and `publish` claims, and `--public-topic`, cover.
//!
//! A pattern is an exact topic name, a prefix ending in `*` (`chat/*` covers `chat/42` but not
//! `chatroom`: the `*` stands after a separator the pattern itself names), or `*` alone (every
//! topic). Nothing else is special: a `*` anywhere but at the end is a literal character, which
//! no valid topic contains, so such a pattern covers nothing.

/// One pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Every topic.
    Any,
    /// Topics that start with this prefix (the pattern without its `*`).
    Prefix(Box<str>),
    /// Exactly this topic.
    Exact(Box<str>),
}

impl Pattern {
    pub fn parse(p: &str) -> Pattern {
        match p.strip_suffix('*') {
            Some("") => Pattern::Any,
            Some(prefix) => Pattern::Prefix(prefix.into()),
            None => Pattern::Exact(p.into()),
        }
    }

    pub fn covers(&self, topic: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Prefix(p) => topic.len() > p.len() && topic.starts_with(&**p),
            Pattern::Exact(t) => **t == *topic,
        }
    }
}

/// A list of patterns: covers a topic when any of them does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patterns(Vec<Pattern>);

impl Patterns {
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Patterns {
        Patterns(list.iter().map(|p| Pattern::parse(p.as_ref())).collect())
    }

    pub fn covers(&self, topic: &str) -> bool {
        self.0.iter().any(|p| p.covers(topic))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_any() {
        let cases: &[(&str, &str, bool)] = &[
            ("chat", "chat", true),
            ("chat", "chat/1", false),
            ("chat", "cha", false),
            ("chat/*", "chat/42", true),
            ("chat/*", "chat/a/b", true),
            // The prefix must not match a longer sibling, nor the bare prefix itself.
            ("chat/*", "chatroom", false),
            ("chat/*", "chat/", false),
            ("chat/*", "chat", false),
            ("chat*", "chatroom", true),
            ("*", "anything", true),
            ("*", "a", true),
            // A `*` inside is literal: it covers only a name with that character.
            ("a*b", "axb", false),
            ("a*b", "a*b", true),
            ("", "", true),
            ("", "a", false),
        ];
        for &(p, t, want) in cases {
            assert_eq!(Pattern::parse(p).covers(t), want, "{p:?} covers {t:?}");
        }
    }

    #[test]
    fn a_list_covers_what_any_member_covers() {
        let l = Patterns::parse(&["news", "user/42/*"]);
        assert!(l.covers("news") && l.covers("user/42/inbox"));
        assert!(!l.covers("user/43/inbox") && !l.covers("newsroom"));
        assert!(!Patterns::default().covers("news"));
        assert!(Patterns::default().is_empty());
    }
}
