//! `surge gateway-sim`: the card payment gateway of `docs/gateway.md` over real HTTP.
