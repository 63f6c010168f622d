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

/// Snapshot ids the providers publish for the models above, each priced exactly like the
/// model it pins: (snapshot, model). Only names listed here (or configured) are priced;
/// a name is never shortened to find a price (`o3-pro` is not `o3`).
const ALIASES: &[(&str, &str)] = &[
    ("openai/gpt-5-2025-08-07", "openai/gpt-5"),
    ("openai/gpt-5-mini-2025-08-07", "openai/gpt-5-mini"),
    ("openai/gpt-5-nano-2025-08-07", "openai/gpt-5-nano"),
    ("openai/gpt-4.1-2025-04-14", "openai/gpt-4.1"),
    ("openai/gpt-4.1-mini-2025-04-14", "openai/gpt-4.1-mini"),
    ("openai/gpt-4.1-nano-2025-04-14", "openai/gpt-4.1-nano"),
    ("openai/gpt-4o-2024-08-06", "openai/gpt-4o"),
    ("openai/gpt-4o-2024-11-20", "openai/gpt-4o"),
    ("openai/gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"),
    ("openai/o3-2025-04-16", "openai/o3"),
    ("openai/o4-mini-2025-04-16", "openai/o4-mini"),
    (
        "anthropic/claude-opus-4-1-20250805",
        "anthropic/claude-opus-4-1",
    ),
    (
        "anthropic/claude-opus-4-20250514",
        "anthropic/claude-opus-4",
    ),
    (
        "anthropic/claude-sonnet-4-5-20250929",
        "anthropic/claude-sonnet-4-5",
    ),
    (
        "anthropic/claude-sonnet-4-20250514",
        "anthropic/claude-sonnet-4",
    ),
    (
        "anthropic/claude-haiku-4-5-20251001",
        "anthropic/claude-haiku-4-5",
    ),
    (
        "anthropic/claude-3-5-haiku-20241022",
        "anthropic/claude-3-5-haiku",
    ),
    (
        "anthropic/claude-3-5-haiku-latest",
        "anthropic/claude-3-5-haiku",
    ),
];

/// The config name of the price charged for any model that has none of its own.
pub const DEFAULT_PRICE_KEY: &str = "*";

#[derive(Debug, Clone)]
pub struct PriceTable {
    prices: HashMap<String, Price>,
    /// For models with no price of their own (`[prices."*"]`); none by default, so an
    /// unknown model is unpriced rather than guessed.
    default: Option<Price>,
}

impl Default for PriceTable {
    fn default() -> Self {
        let mut prices: HashMap<String, Price> = BUILT_IN
            .iter()
            .map(|(m, i, o, c)| {
                (
                    (*m).to_owned(),
                    Price::from_usd_per_million(*i, *o, Some(*c)),
                )
            })
            .collect();
        for (alias, model) in ALIASES {
            if let Some(p) = prices.get(*model).copied() {
                prices.insert((*alias).to_owned(), p);
            }
        }
        PriceTable {
            prices,
            default: None,
        }
    }
}

impl PriceTable {
    /// The built-in table with `overrides` applied on top; an override named
    /// [`DEFAULT_PRICE_KEY`] prices every model that has no price of its own.
    pub fn with_overrides(overrides: impl IntoIterator<Item = (String, Price)>) -> Self {
        let mut t = PriceTable::default();
        for (model, price) in overrides {
            if model == DEFAULT_PRICE_KEY {
                t.default = Some(price);
            } else {
                t.prices.insert(model, price);
            }
        }
        t
    }

    /// Every model with a price of its own.
    pub fn models(&self) -> impl Iterator<Item = String> + '_ {
        self.prices.keys().cloned()
    }

    /// The price of `model` (`provider/model`): its own, exactly as named (snapshot ids
    /// are listed as aliases of their model), else, for a tenant's own provider, that of
    /// the provider kind it speaks (`kind/model`), else the configured default. `None`:
    /// the model is unpriced.
    pub fn lookup(&self, model: &str, kind: Option<&str>) -> Option<Price> {
        self.lookup_exact(model, kind).or(self.default)
    }

    /// Like [`PriceTable::lookup`], without the configured default.
    pub fn lookup_exact(&self, model: &str, kind: Option<&str>) -> Option<Price> {
        let (_, name) = model.split_once('/')?;
        if let Some(p) = self.prices.get(model) {
            return Some(*p);
        }
        kind.and_then(|k| self.prices.get(&format!("{k}/{name}")).copied())
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
    fn lookup_by_exact_name_alias_and_kind_only() {
        let t = PriceTable::default();
        assert!(t.lookup("openai/gpt-4o-mini", None).is_some());
        // A snapshot id listed as an alias is priced like its model.
        assert_eq!(
            t.lookup("openai/gpt-4o-mini-2024-07-18", None),
            t.lookup("openai/gpt-4o-mini", None)
        );
        assert_eq!(
            t.lookup("myopenai/gpt-4o", Some("openai")),
            t.lookup("openai/gpt-4o", None)
        );
        // A name is never shortened to find a price: a pricier sibling is not its base.
        for unknown in [
            "openai/o3-pro",
            "openai/gpt-4o-mini-2099-01-01",
            "openai/gpt-5-pro",
            "anthropic/claude-opus-4-1-extended",
            "openai/unknown-model",
        ] {
            assert!(t.lookup(unknown, None).is_none(), "{unknown} is unpriced");
        }
        assert!(t.lookup("mine/o3-pro", Some("openai")).is_none());
        assert!(t.lookup("no-slash", None).is_none());
        let o = PriceTable::with_overrides([(
            "openai/gpt-4o".to_owned(),
            Price::from_usd_per_million(1.0, 1.0, None),
        )]);
        assert_eq!(
            o.lookup("openai/gpt-4o", None).map(|p| p.input),
            Some(1_000_000_000)
        );
        // The configured default prices what has no price of its own, and only that.
        let d = PriceTable::with_overrides([(
            DEFAULT_PRICE_KEY.to_owned(),
            Price::from_usd_per_million(9.0, 9.0, None),
        )]);
        assert_eq!(
            d.lookup("openai/o3-pro", None).map(|p| p.input),
            Some(9_000_000_000)
        );
        assert_eq!(d.lookup_exact("openai/o3-pro", None), None);
        assert_eq!(
            d.lookup("openai/o3", None),
            PriceTable::default().lookup("openai/o3", None)
        );
        assert!(!d.models().any(|m| m == DEFAULT_PRICE_KEY));
    }
}
