//! How values are compared: e-mails, phone numbers and text are normalized once, the same way
//! for what is indexed and for what is asked, on every backend.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// An e-mail address as identities and filters compare it: trimmed and lowercased, or `None`
/// when it is not an address (no `@`, an empty side, whitespace inside).
pub fn email(text: &str) -> Option<String> {
    let text = text.trim();
    let (local, domain) = text.rsplit_once('@')?;
    if local.is_empty()
        || domain.is_empty()
        || !domain.contains('.') && domain != "localhost"
        || text.chars().any(char::is_whitespace)
    {
        return None;
    }
    Some(text.to_lowercase())
}

/// A phone number as identities compare it: E.164 (`+14155550123`) when the text is a valid
/// number in international form (a leading `+` or `00`), else `None`. A number written without
/// its country code cannot be told apart from another country's, so it never links contacts.
pub fn phone_e164(text: &str) -> Option<String> {
    let text = text.trim();
    let international = if let Some(rest) = text.strip_prefix("00") {
        format!("+{rest}")
    } else if text.starts_with('+') {
        text.to_string()
    } else {
        return None;
    };
    let number = phonenumber::parse(None, &international).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    Some(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// A phone number as the phone filter compares it: its E.164 form when it has one, else its
/// digits (at least five), so `8 (912) 345-67-89` is found as `89123456789`.
pub fn phone(text: &str) -> Option<String> {
    if let Some(e164) = phone_e164(text) {
        return Some(e164);
    }
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    (digits.len() >= 5).then_some(digits)
}

/// Whether `c` is written without spaces between words (Han, Hiragana, Katakana, Hangul), so
/// its runs are indexed as single characters and pairs.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x2FFFF) // CJK Extensions B-F
}

/// Folds `text` for matching: compatibility-decomposed (NFKD), accents and other combining
/// marks dropped, lowercased. `Ёлка` and `ёлка` and `елка` fold alike, as do `Café` and `cafe`.
pub fn fold(text: &str) -> String {
    text.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The search terms of `text`, in order, repeats kept: words of letters and digits after
/// [`fold`]; a run of CJK characters gives each character and each adjacent pair.
pub fn terms(text: &str) -> Vec<String> {
    let folded = fold(text);
    let mut out = Vec::new();
    let mut word = String::new();
    let mut cjk: Vec<char> = Vec::new();
    let flush_word = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    let flush_cjk = |cjk: &mut Vec<char>, out: &mut Vec<String>| {
        for (i, c) in cjk.iter().enumerate() {
            out.push(c.to_string());
            if let Some(next) = cjk.get(i + 1) {
                out.push([*c, *next].iter().collect());
            }
        }
        cjk.clear();
    };
    for c in folded.chars() {
        if is_cjk(c) {
            flush_word(&mut word, &mut out);
            cjk.push(c);
        } else if c.is_alphanumeric() {
            flush_cjk(&mut cjk, &mut out);
            word.push(c);
        } else {
            flush_word(&mut word, &mut out);
            flush_cjk(&mut cjk, &mut out);
        }
    }
    flush_word(&mut word, &mut out);
    flush_cjk(&mut cjk, &mut out);
    out
}

/// The terms a text query asks for, every one of which a match must hold: its words, and for
/// a CJK run its pairs (a single CJK character: itself). Repeats removed, order kept.
pub fn query_terms(text: &str) -> Vec<String> {
    let folded = fold(text);
    let mut out: Vec<String> = Vec::new();
    let push = |term: String, out: &mut Vec<String>| {
        if !out.contains(&term) {
            out.push(term);
        }
    };
    let mut word = String::new();
    let mut cjk: Vec<char> = Vec::new();
    let mut chars = folded.chars().peekable();
    loop {
        let c = chars.next();
        let kind = c.map(|c| (is_cjk(c), c.is_alphanumeric()));
        if !matches!(kind, Some((false, true))) && !word.is_empty() {
            push(std::mem::take(&mut word), &mut out);
        }
        if !matches!(kind, Some((true, _))) && !cjk.is_empty() {
            if cjk.len() == 1 {
                push(cjk[0].to_string(), &mut out);
            }
            for pair in cjk.windows(2) {
                push(pair.iter().collect(), &mut out);
            }
            cjk.clear();
        }
        match (c, kind) {
            (None, _) => break,
            (Some(c), Some((true, _))) => cjk.push(c),
            (Some(c), Some((false, true))) => word.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased_and_non_addresses_refused() {
        assert_eq!(
            email("  Jane.Doe@Example.COM "),
            Some("jane.doe@example.com".into())
        );
        assert_eq!(email("jane"), None);
        assert_eq!(email("@example.com"), None);
        assert_eq!(email("jane@"), None);
        assert_eq!(email("jane doe@example.com"), None);
        assert_eq!(email("jane@example"), None);
    }

    #[test]
    fn phones_in_international_form_become_e164() {
        assert_eq!(phone_e164("+1 (415) 555-2671"), Some("+14155552671".into()));
        assert_eq!(
            phone_e164("00 7 912 345-67-89"),
            Some("+79123456789".into())
        );
        assert_eq!(phone_e164("+7 912 345 67 89"), Some("+79123456789".into()));
        assert_eq!(phone_e164("8 912 345 67 89"), None, "no country code");
        assert_eq!(phone_e164("+1 23"), None, "not a valid number");
        assert_eq!(phone("8 (912) 345-67-89"), Some("89123456789".into()));
        assert_eq!(phone("+7 912 345 67 89"), Some("+79123456789".into()));
        assert_eq!(phone("12"), None);
    }

    #[test]
    fn text_folds_case_and_accents_in_latin_and_cyrillic() {
        assert_eq!(terms("Café CRÈME, naïve!"), vec!["cafe", "creme", "naive"]);
        assert_eq!(terms("Ёлка Йогурт"), vec!["елка", "иогурт"]);
        assert_eq!(query_terms("ЁЛКА"), terms("ёлка"));
        assert_eq!(terms("order #A-17"), vec!["order", "a", "17"]);
    }

    #[test]
    fn chinese_runs_give_characters_and_pairs() {
        assert_eq!(
            terms("退款申请"),
            vec!["退", "退款", "款", "款申", "申", "申请", "请"]
        );
        assert_eq!(query_terms("退款"), vec!["退款"]);
        assert_eq!(query_terms("退"), vec!["退"]);
        assert_eq!(
            query_terms("申请退款 refund"),
            vec!["申请", "请退", "退款", "refund"]
        );
        // Every query term of a text is among that text's terms.
        let indexed = terms("我想申请退款 please");
        for term in query_terms("申请退款 PLEASE") {
            assert!(indexed.contains(&term), "{term}");
        }
    }
}
