//! surge-core (under construction).
