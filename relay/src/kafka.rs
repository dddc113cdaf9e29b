//! Kafka sink (rdkafka): one topic per aggregate, key = aggregate id, JSON envelope value,
//! headers `event-id` and `event-type`; idempotent producer with acks=all. To be built.
