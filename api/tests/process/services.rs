//! The services the end-to-end tests talk to besides surge: the Kafka-protocol broker and
//! MariaDB of `scripts/services.sh` (or `SURGE_TEST_KAFKA_BROKERS`, `SURGE_TEST_MARIADB_URL`),
//! and a database of a test's own on that MariaDB, dropped with it.

use mysql_async::prelude::Queryable;

use super::require;

/// A header of a consumed Kafka message as text ("" when it is absent).
pub fn kafka_header(m: &impl rdkafka::message::Message, name: &str) -> String {
    use rdkafka::message::Headers;
    m.headers()
        .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

pub fn brokers() -> String {
    std::env::var("SURGE_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn mariadb_base() -> String {
    std::env::var("SURGE_TEST_MARIADB_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

pub fn require_services() {
    require("the Kafka-protocol broker", brokers().split(',').next().unwrap_or_default());
    require_mariadb();
}

pub fn require_mariadb() {
    let base = mariadb_base();
    let host = base.rsplit('@').next().unwrap_or_default().split('/').next().unwrap_or_default().to_string();
    require("MariaDB", &host);
}

pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{tag}_{}_{nanos}", std::process::id())
}

pub struct Db {
    runtime: tokio::runtime::Runtime,
    pool: mysql_async::Pool,
    pub name: String,
}

impl Db {
    pub fn create(tag: &str) -> Db {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let name = unique(tag);
        let admin = mysql_async::Pool::new(mariadb_base().as_str());
        runtime.block_on(async {
            let mut c = admin.get_conn().await.expect("connect to MariaDB");
            c.query_drop(format!("CREATE DATABASE `{name}`")).await.expect("create database");
            drop(c);
            admin.disconnect().await.expect("disconnect");
        });
        let pool = mysql_async::Pool::new(format!("{}/{name}", mariadb_base()).as_str());
        Db { runtime, pool, name }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", mariadb_base(), self.name)
    }

    pub fn rows<T: mysql_async::prelude::FromRow + Send + 'static>(&self, sql: &str) -> Vec<T> {
        self.runtime.block_on(async {
            let mut c = self.pool.get_conn().await.expect("connect");
            c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let name = self.name.clone();
        let pool = self.pool.clone();
        self.runtime.block_on(async move {
            if let Ok(mut c) = pool.get_conn().await {
                let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{name}`")).await;
            }
            let _ = pool.disconnect().await;
        });
    }
}
