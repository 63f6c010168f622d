//! Model prices (USD per million tokens) and the exact cost of a call in nano-USD.

use berth_core::NanoUsd;
use std::collections::HashMap;

/// Prices of one model, in nano-USD per million tokens (so that, per token, prices are
/// integer femto-dollars and no float enters a cost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: i64,
    pub output: i64,
    pub cached_input: i64,
}

impl Price {
    /// From USD per million tokens, as configs and price pages state them.
    pub fn from_usd_per_million(input: f64, output: f64, cached_input: Option<f64>) -> Self {
        Price {
            input: NanoUsd::from_usd(input).0,
            output: NanoUsd::from_usd(output).0,
            cached_input: NanoUsd::from_usd(cached_input.unwrap_or(input)).0,
        }
    }

    /// The cost of a call. `input_tokens` includes `cached_input_tokens`, which are
    /// charged at the cached rate. Rounded to the nearest nano-USD.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64, cached_input_tokens: u64) -> NanoUsd {
        let cached = cached_input_tokens.min(input_tokens);
        let fresh = input_tokens - cached;
        let femto = i128::from(fresh) * i128::from(self.input)
            + i128::from(cached) * i128::from(self.cached_input)
            + i128::from(output_tokens) * i128::from(self.output);
        let nano = (femto + 500_000) / 1_000_000;
        NanoUsd(i64::try_from(nano).unwrap_or(i64::MAX))
    }
}

/// Built-in prices, USD per million tokens: (model, input, output, cached input).
/// Operators override or extend them with `[prices."provider/model"]`.
const BUILT_IN: &[(&str, f64, f64, f64)] = &[
    ("openai/gpt-5", 1.25, 10.0, 0.125),
    ("openai/gpt-5-mini", 0.25, 2.0, 0.025),
    ("openai/gpt-5-nano", 0.05, 0.40, 0.005),
    ("openai/gpt-4.1", 2.0, 8.0, 0.50),
    ("openai/gpt-4.1-mini", 0.40, 1.60, 0.10),
    ("openai/gpt-4.1-nano", 0.10, 0.40, 0.025),
    ("openai/gpt-4o", 2.50, 10.0, 1.25),
    ("openai/gpt-4o-mini", 0.15, 0.60, 0.075),
    ("openai/o3", 2.0, 8.0, 0.50),
    ("openai/o4-mini", 1.10, 4.40, 0.275),
    ("openai/text-embedding-3-small", 0.02, 0.0, 0.02),
    ("openai/text-embedding-3-large", 0.13, 0.0, 0.13),
    ("anthropic/claude-opus-4-1", 15.0, 75.0, 1.50),
    ("anthropic/claude-opus-4", 15.0, 75.0, 1.50),
    ("anthropic/claude-sonnet-4-5", 3.0, 15.0, 0.30),
    ("anthropic/claude-sonnet-4", 3.0, 15.0, 0.30),
    ("anthropic/claude-haiku-4-5", 1.0, 5.0, 0.10),
    ("anthropic/claude-3-5-haiku", 0.80, 4.0, 0.08),
    // The offline mock provider is priced so that tests and demos show real, exact costs.
    ("mock/echo", 1.0, 2.0, 0.5),
    ("mock/tools", 1.0, 2.0, 0.5),
    ("mock/embed", 0.10, 0.0, 0.10),
];

#[derive(Debug, Clone)]
pub struct PriceTable {
    prices: HashMap<String, Price>,
}

impl Default for PriceTable {
    fn default() -> Self {
        let prices = BUILT_IN
            .iter()
            .map(|(m, i, o, c)| {
                (
                    (*m).to_owned(),
                    Price::from_usd_per_million(*i, *o, Some(*c)),
                )
            })
            .collect();
        PriceTable { prices }
    }
}

impl PriceTable {
    /// The built-in table with `overrides` applied on top.
    pub fn with_overrides(overrides: impl IntoIterator<Item = (String, Price)>) -> Self {
        let mut t = PriceTable::default();
        t.prices.extend(overrides);
        t
    }

    /// Every model with a price.
    pub fn models(&self) -> impl Iterator<Item = String> + '_ {
        self.prices.keys().cloned()
    }

    /// The price of `model` (`provider/model`). A tenant's own provider is priced like the
    /// provider kind it speaks (`kind/model`), and a dated model id like its base name
    /// (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`).
    pub fn lookup(&self, model: &str, kind: Option<&str>) -> Option<Price> {
        let (provider, name) = model.split_once('/')?;
        let mut candidates = vec![format!("{provider}/{name}")];
        if let Some(k) = kind {
            candidates.push(format!("{k}/{name}"));
        }
        for c in candidates {
            if let Some(p) = self.prices.get(&c) {
                return Some(*p);
            }
            // Strip trailing version segments one at a time: foo-2024-07-18 → foo-2024-07 → …
            let mut base = c.as_str();
            while let Some((head, _)) = base.rsplit_once('-') {
                if let Some(p) = self.prices.get(head) {
                    return Some(*p);
                }
                base = head;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_exact_integers() {
        let p = Price::from_usd_per_million(0.15, 0.60, Some(0.075));
        // 1M input tokens = $0.15 exactly.
        assert_eq!(p.cost(1_000_000, 0, 0), NanoUsd(150_000_000));
        // 1 output token = $0.0000006 = 600 nano-USD.
        assert_eq!(p.cost(0, 1, 0), NanoUsd(600));
        // 1 input token = 150 nano-USD; cached half price.
        assert_eq!(p.cost(2, 0, 1), NanoUsd(150 + 75));
        // Sub-nano remainders round to nearest: 1 token at $0.0001/M = 0.1 nano.
        let tiny = Price::from_usd_per_million(0.0001, 0.0, None);
        assert_eq!(tiny.cost(4, 0, 0), NanoUsd(0));
        assert_eq!(tiny.cost(5, 0, 0), NanoUsd(1));
        // Cached tokens never exceed input tokens.
        assert_eq!(p.cost(1, 0, 10), NanoUsd(75));
    }

    #[test]
    fn lookup_by_name_kind_and_dated_ids() {
        let t = PriceTable::default();
        assert!(t.lookup("openai/gpt-4o-mini", None).is_some());
        assert_eq!(
            t.lookup("openai/gpt-4o-mini-2024-07-18", None),
            t.lookup("openai/gpt-4o-mini", None)
        );
        assert_eq!(
            t.lookup("myopenai/gpt-4o", Some("openai")),
            t.lookup("openai/gpt-4o", None)
        );
        assert!(t.lookup("openai/unknown-model", None).is_none());
        assert!(t.lookup("no-slash", None).is_none());
        let o = PriceTable::with_overrides([(
            "openai/gpt-4o".to_owned(),
            Price::from_usd_per_million(1.0, 1.0, None),
        )]);
        assert_eq!(
            o.lookup("openai/gpt-4o", None).map(|p| p.input),
            Some(1_000_000_000)
        );
    }
}
