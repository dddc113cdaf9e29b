//! The chart of accounts and account totals. Every merchant has its own books.
//!
//! | account                 | kind      | debited when                  | credited when                 |
//! |-------------------------|-----------|-------------------------------|-------------------------------|
//! | `points:issued`         | expense   | points are credited           | —                             |
//! | `customer:{id}:points`  | liability | points pay for an order       | points are credited/refunded  |
//! | `gateway:clearing`      | asset     | a card payment is captured    | a card payment is refunded    |
//! | `sales:revenue`         | revenue   | —                             | any payment is captured       |
//! | `refunds`               | contra    | any payment is refunded       | —                             |
//!
//! Postings (each one debit and one credit of the same amount):
//! - credit points A:        Dr `points:issued` A,        Cr `customer:{c}:points` A
//! - capture by points T:    Dr `customer:{c}:points` T,  Cr `sales:revenue` T
//! - capture by card A:      Dr `gateway:clearing` A,     Cr `sales:revenue` A
//! - refund to points R:     Dr `refunds` R,              Cr `customer:{c}:points` R
//! - refund to card R:       Dr `refunds` R,              Cr `gateway:clearing` R
//!
//! Authorizations and voids move no money and post nothing. A balance is debits minus
//! credits, so liability and revenue accounts have negative balances; a customer's points
//! balance is the negated balance of their points account, and the engine asserts that the
//! two agree.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::is_valid_id;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Account {
    PointsIssued,
    GatewayClearing,
    SalesRevenue,
    Refunds,
    CustomerPoints(Arc<str>),
}

/// The merchant-wide accounts, in the order `Ledger::fixed` stores them.
pub const FIXED_ACCOUNTS: [Account; 4] =
    [Account::PointsIssued, Account::GatewayClearing, Account::SalesRevenue, Account::Refunds];

impl Account {
    pub fn name(&self) -> String {
        match self {
            Account::CustomerPoints(c) => format!("customer:{c}:points"),
            fixed => fixed.fixed_name().unwrap_or_default().to_string(),
        }
    }

    fn fixed_name(&self) -> Option<&'static str> {
        Some(match self {
            Account::PointsIssued => "points:issued",
            Account::GatewayClearing => "gateway:clearing",
            Account::SalesRevenue => "sales:revenue",
            Account::Refunds => "refunds",
            Account::CustomerPoints(_) => return None,
        })
    }

    /// Index into `Ledger::fixed`, for the merchant-wide accounts.
    pub(crate) fn fixed_index(&self) -> Option<usize> {
        FIXED_ACCOUNTS.iter().position(|a| a == self)
    }

    /// Parses an account name as the API shows it.
    pub fn parse(name: &str) -> Option<Account> {
        if let Some(a) = FIXED_ACCOUNTS.iter().find(|a| a.fixed_name() == Some(name)) {
            return Some(a.clone());
        }
        let customer = name.strip_prefix("customer:")?.strip_suffix(":points")?;
        is_valid_id(customer).then(|| Account::CustomerPoints(customer.into()))
    }
}

/// Running totals of one account. u128: a u64 of minor units could overflow over the life
/// of a busy account; u128 cannot in any realistic lifetime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTotals {
    pub debits: u128,
    pub credits: u128,
}

impl AccountTotals {
    pub fn balance(&self) -> i128 {
        // Both totals are below 2^127 in any reachable state (2^127 minor units).
        self.debits as i128 - self.credits as i128
    }
}

/// A merchant's books: the fixed accounts here, customer point accounts with the customer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub fixed: [AccountTotals; 4],
    /// Postings so far; the next posting's number is this plus one.
    pub postings: u64,
}

/// `GET /v1/ledger/trial-balance`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialBalance {
    pub total_debits: u128,
    pub total_credits: u128,
    pub balanced: bool,
    pub accounts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in FIXED_ACCOUNTS.iter().cloned().chain([Account::CustomerPoints("c-1".into())]) {
            assert_eq!(Account::parse(&a.name()), Some(a));
        }
        assert_eq!(Account::parse("customer::points"), None);
        assert_eq!(Account::parse("customer:a b:points"), None);
        assert_eq!(Account::parse("cash"), None);
    }
}
