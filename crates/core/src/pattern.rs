//! Glob patterns (`openai/*`, `*__send_email`, `crm__*`): `*` matches any run of characters.

/// Whether `text` matches `pattern`, where `*` stands for any (possibly empty) run of
/// characters and every other character matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` seen and the text position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether any of `patterns` matches `text`.
pub fn any_match<'a>(patterns: impl IntoIterator<Item = &'a String>, text: &str) -> bool {
    patterns.into_iter().any(|p| glob_match(p, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn globs() {
        assert!(glob_match("openai/*", "openai/gpt-4o"));
        assert!(!glob_match("openai/*", "anthropic/claude"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*__send_email", "crm__send_email"));
        assert!(glob_match("*__delete_*", "crm__delete_user"));
        assert!(!glob_match("*__delete_*", "crm__remove_user"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("mock/echo", "mock/echo"));
        assert!(!glob_match("mock/echo", "mock/echo2"));
    }

    proptest! {
        #[test]
        fn literal_patterns_match_only_themselves(s in "[a-z/_-]{0,12}", t in "[a-z/_-]{0,12}") {
            prop_assert_eq!(glob_match(&s, &t), s == t);
        }

        #[test]
        fn star_matches_everything(t in "\\PC{0,20}") {
            prop_assert!(glob_match("*", &t));
            let with_star = t.clone() + "*";
            prop_assert!(glob_match(&with_star, &t));
        }
    }
}
