//! The chart of accounts and account totals. Every merchant has its own books.
//!
//! | account                 | kind      | debited when                         | credited when                        |
//! |-------------------------|-----------|--------------------------------------|--------------------------------------|
//! | `points:issued`         | expense   | points are credited                  | —                                    |
//! | `customer:{id}:points`  | liability | points pay or are authorized         | points are credited/refunded/released|
//! | `points:authorized`     | liability | authorized points are captured or released | points are authorized (manual capture) |
//! | `gateway:clearing`      | asset     | a card payment is authorized         | a card authorization is released or a card payment refunded |
//! | `gateway:authorized`    | liability | an authorized card payment is captured or released | a card payment is authorized |
//! | `sales:revenue`         | revenue   | —                                    | any payment is captured              |
//! | `refunds`               | contra    | any payment is refunded              | —                                    |
//!
//! Postings (each one debit and one credit of the same amount):
//! - credit points A:             Dr `points:issued` A,        Cr `customer:{c}:points` A
//! - capture by points T:         Dr `customer:{c}:points` T,  Cr `sales:revenue` T
//! - authorize points T (manual): Dr `customer:{c}:points` T,  Cr `points:authorized` T
//! - capture authorized points C: Dr `points:authorized` C,    Cr `sales:revenue` C
//! - release authorized points R: Dr `points:authorized` R,    Cr `customer:{c}:points` R
//!   (the part of a partial capture not captured, or the whole of a voided authorization)
//! - authorize by card A:         Dr `gateway:clearing` A,     Cr `gateway:authorized` A
//! - capture authorized card C:   Dr `gateway:authorized` C,   Cr `sales:revenue` C
//! - release card authorization R: Dr `gateway:authorized` R,  Cr `gateway:clearing` R
//!   (a partial capture's rest, or the whole of a voided authorization)
//! - refund to points R:          Dr `refunds` R,              Cr `customer:{c}:points` R
//! - refund to card R:            Dr `refunds` R,              Cr `gateway:clearing` R
//!
//! A points authorization takes the points from the customer at once (the balance can then
//! pay nothing else) and parks them in `points:authorized` until the capture or the void:
//! the customer's balance is never negative and never promised twice. A card authorization
//! has the same shape: what the gateway approved is receivable (`gateway:clearing`) and parked
//! in `gateway:authorized` until it is captured (revenue) or released, so `gateway:clearing`
//! always holds what the gateway owes for captured, unrefunded card payments plus open
//! authorizations. (Before the gateway path, core's simulated card payments were captured
//! straight from `gateway:clearing` to `sales:revenue` with no authorization posting; logs
//! holding them, such as the snapshot fixtures, replay as they were.) A balance is
//! debits minus credits, so liability and revenue accounts have negative balances; a
//! customer's points balance is the negated balance of their points account, and the engine
//! asserts that the two agree.

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
    // Appended: variants are encoded by index, so new ones go last.
    PointsAuthorized,
    GatewayAuthorized,
}

/// The merchant-wide accounts, in the order `Ledger::fixed` stores them (new ones last: a
/// version-1 snapshot holds the first four, version 2 the first five).
pub const FIXED_ACCOUNTS: [Account; 6] = [
    Account::PointsIssued,
    Account::GatewayClearing,
    Account::SalesRevenue,
    Account::Refunds,
    Account::PointsAuthorized,
    Account::GatewayAuthorized,
];

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
            Account::PointsAuthorized => "points:authorized",
            Account::GatewayAuthorized => "gateway:authorized",
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
/// (Snapshots of versions 1 and 2 held fewer fixed accounts; `snapshot_legacy` reads them.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub fixed: [AccountTotals; FIXED_ACCOUNTS.len()],
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
