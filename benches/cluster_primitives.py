#!/usr/bin/python3
"""Probes for benches/cluster_primitives.sh: the primitives a surge cluster would stand on.

  cluster_primitives.py etcd-latency ENDPOINT N
      sequential put, txn compare-and-swap on a revision (the fencing check), a linearizable
      get of the owner key (the cheaper fencing check), lease grant and
      lease keep-alive over one keep-alive HTTP connection to etcd's v3 JSON gateway; p50/p99.
  cluster_primitives.py etcd-hold ENDPOINT KEY TTL
      takes KEY under a lease of TTL seconds and keeps the lease alive every TTL/4 until
      killed; prints "held REV" once it owns the key; after a pause it reports what etcd
      answers (lease gone, fenced write refused) and exits.
  cluster_primitives.py etcd-take ENDPOINT KEY TTL T0 TIMEOUT [keep]
      polls every 20 ms to take KEY (txn: create_revision == 0); prints the seconds from T0
      (a CLOCK_REALTIME timestamp: when the holder was signalled) to ownership; with keep,
      leaves the key (under its lease) for the old holder to find taken.
  cluster_primitives.py etcd-log ENDPOINTS SIZES CONCURRENCY SECONDS
      Option C (docs/cluster.md): a partition's log as etcd keys. Each of CONCURRENCY
      threads owns one partition (a lease and the owner key, token = its create revision)
      and appends group commits one at a time: one txn "if create_revision(owner) == token
      then put /bench/log/p{p}/{seq:020}" with a payload of SIZE bytes. For each size and
      concurrency: txn latency p50/p99, commits/s and MiB/s over SECONDS; then etcd's
      database size, and again after deleting the log keys, compacting and defragmenting;
      then a catch-up read of one partition's log in pages of at most 1 MiB (MiB/s).
      ENDPOINTS: the leader first (where the writers go), then the others (defragmented).
  cluster_primitives.py kafka BOOTSTRAP N
      against a Kafka-protocol broker: produce latency with acks=all (idempotent producer),
      a transaction per write, fencing of an older producer epoch, read_committed, and a
      consumer group's assignment and rebalance.

Uses the standard library and Debian's python3-confluent-kafka only.
"""
import base64
import http.client
import json
import os
import sys
import time


def b64(s):
    return base64.b64encode(s.encode()).decode()


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def ms(x):
    return "%.2f" % (x * 1000.0)


class Etcd:
    def __init__(self, endpoint):
        host, port = endpoint.replace("http://", "").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=5)

    def call(self, path, body):
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError("%s %s: %s" % (path, r.status, data[:200]))
        return json.loads(data)

    def grant(self, ttl):
        return int(self.call("/v3/lease/grant", {"TTL": ttl})["ID"])

    def keepalive(self, lease):
        res = self.call("/v3/lease/keepalive", {"ID": lease})
        return int(res.get("result", {}).get("TTL", 0))

    def acquire(self, key, lease):
        """Takes key if nobody holds it; returns its create revision (the fencing token) or None."""
        res = self.call("/v3/kv/txn", {
            "compare": [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": b64(key), "value": b64(str(os.getpid())), "lease": lease}}],
        })
        if res.get("succeeded"):
            return int(res["header"]["revision"])
        return None

    def fenced_put(self, owner_key, token, key, value):
        """Writes key only while owner_key was created at revision token (the fencing check)."""
        res = self.call("/v3/kv/txn", {
            "compare": [{"key": b64(owner_key), "target": "CREATE", "result": "EQUAL",
                         "create_revision": str(token)}],
            "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
        })
        return bool(res.get("succeeded"))


def etcd_latency(endpoint, n):
    e = Etcd(endpoint)
    rows = []

    def timed(name, f, count):
        t = []
        for i in range(count):
            a = time.perf_counter()
            f(i)
            t.append(time.perf_counter() - a)
        rows.append((name, count, t))

    timed("put", lambda i: e.call("/v3/kv/put", {"key": b64("bench/k%d" % (i % 64)), "value": b64("x" * 100)}), n)
    lease = e.grant(30)
    token = e.acquire("bench/owner", lease)
    assert token, "bench/owner already held"

    def cas(i):
        assert e.fenced_put("bench/owner", token, "bench/data", "v%d" % i)
    timed("txn CAS on the owner's revision", cas, n)
    timed("linearizable get of the owner key", lambda i: e.call("/v3/kv/range", {"key": b64("bench/owner")}), n)
    timed("lease grant (TTL 30 s)", lambda i: e.grant(30), max(1, n // 5))
    timed("lease keep-alive", lambda i: e.keepalive(lease), n)
    for name, count, t in rows:
        print("etcd %-32s n=%-5d p50 %s ms  p99 %s ms  max %s ms" % (name, count, ms(pct(t, 50)), ms(pct(t, 99)), ms(max(t))))
    # a fencing check with a stale token is refused
    print("etcd stale-token txn refused: %s" % (not e.fenced_put("bench/owner", token - 1, "bench/data", "late")))
    e.call("/v3/kv/deleterange", {"key": b64("bench/owner")})


def etcd_hold(endpoint, key, ttl):
    e = Etcd(endpoint)
    lease = e.grant(ttl)
    token = e.acquire(key, lease)
    if token is None:
        print("not acquired", flush=True)
        sys.exit(1)
    print("held %d" % token, flush=True)
    last = time.monotonic()
    while True:
        time.sleep(ttl / 4.0)
        gap = time.monotonic() - last
        left = e.keepalive(lease)
        last = time.monotonic()
        if left <= 0:
            ok = e.fenced_put(key, token, key + "/data", "late write of the old owner")
            print("after a %.1f s gap: lease gone; the old owner's fenced write %s"
                  % (gap, "ACCEPTED (broken)" if ok else "refused"), flush=True)
            return


def etcd_take(endpoint, key, ttl, t0, timeout, keep=False):
    e = Etcd(endpoint)
    lease = e.grant(max(ttl, timeout + 30))  # outlives the polling; a real owner keeps it alive
    deadline = time.time() + timeout
    while time.time() < deadline:
        token = e.acquire(key, lease)
        if token:
            print("taken %.3f s after the signal (revision %d)" % (time.time() - t0, token), flush=True)
            if not keep:
                e.call("/v3/kv/deleterange", {"key": b64(key)})
            return
        time.sleep(0.02)
    print("not taken within %d s" % timeout)
    sys.exit(1)


def db_size(endpoints):
    return max(int(Etcd(ep).call("/v3/maintenance/status", {})["dbSize"]) for ep in endpoints)


def etcd_log(endpoints, sizes, concurrencies, seconds):
    import threading

    leader = endpoints[0]
    payloads = {size: base64.b64encode(os.urandom(size)).decode() for size in sizes}
    # One append per txn, the body written out once per size: the client's JSON encoding
    # stays out of the measurement (etcd's JSON gateway still decodes it).
    txn = ('{"compare":[{"key":"%s","target":"CREATE","result":"EQUAL","create_revision":"%d"}],'
           '"success":[{"request_put":{"key":"%s","value":"%s"}}]}')
    max_commits = 20000  # per thread and cell: bounds the loop whatever the latency

    def writer(p, size, stop, out):
        e = Etcd(leader)
        lease = e.grant(30)
        owner = "bench/owner/p%d" % p
        token = e.acquire(owner, lease)
        assert token, owner + " already held"
        t = []
        seq = 0
        while not stop.is_set() and seq < max_commits:
            body = txn % (b64(owner), token, b64("bench/log/p%d/%020d" % (p, seq)), payloads[size])
            a = time.perf_counter()
            e.conn.request("POST", "/v3/kv/txn", body, {"Content-Type": "application/json"})
            r = e.conn.getresponse()
            data = r.read()
            t.append(time.perf_counter() - a)
            if r.status != 200 or not json.loads(data).get("succeeded"):
                raise RuntimeError("append refused: %s %s" % (r.status, data[:200]))
            seq += 1
        out[p] = t
        e.call("/v3/kv/deleterange", {"key": b64(owner)})
        e.call("/v3/lease/revoke", {"ID": lease})

    admin = Etcd(leader)
    for size in sizes:
        for k in concurrencies:
            stop = threading.Event()
            out = {}
            threads = [threading.Thread(target=writer, args=(p, size, stop, out)) for p in range(k)]
            for th in threads:
                th.start()
            a = time.perf_counter()
            time.sleep(seconds)
            stop.set()
            for th in threads:
                th.join()
            elapsed = time.perf_counter() - a
            t = [x for p in out for x in out[p]]
            if len(out) != k:
                raise RuntimeError("a writer failed")
            print("etcd log append %4d KiB x %2d partitions: n=%-6d p50 %s ms  p99 %s ms  %7.1f commits/s  %6.1f MiB/s"
                  % (size // 1024, k, len(t), ms(pct(t, 50)), ms(pct(t, 99)), len(t) / elapsed,
                     len(t) * size / elapsed / 2**20), flush=True)
            # storage: what the log costs before and after truncating it
            before = db_size(endpoints)
            if k == concurrencies[-1]:
                # catch-up: read partition 0's log back in pages of at most 1 MiB
                page = max(1, 2**20 // size)
                start = b64("bench/log/p0/")
                end = b64("bench/log/p0/~")
                got = 0
                nbytes = 0
                a = time.perf_counter()
                while True:
                    res = admin.call("/v3/kv/range", {"key": start, "range_end": end, "limit": page})
                    kvs = res.get("kvs", [])
                    got += len(kvs)
                    nbytes += sum(len(base64.b64decode(kv.get("value", ""))) for kv in kvs)
                    if not res.get("more") or not kvs:
                        break
                    start = b64(base64.b64decode(kvs[-1]["key"]).decode() + "\0")
                b = time.perf_counter() - a
                print("etcd log catch-up read %4d KiB records: %d records, %.1f MiB in %.3f s: %.1f MiB/s"
                      % (size // 1024, got, nbytes / 2**20, b, nbytes / 2**20 / b), flush=True)
            res = admin.call("/v3/kv/deleterange", {"key": b64("bench/log/"), "range_end": b64("bench/log0")})
            rev = int(res["header"]["revision"])
            a = time.perf_counter()
            admin.call("/v3/kv/compaction", {"revision": rev, "physical": True})
            compact = time.perf_counter() - a
            a = time.perf_counter()
            for ep in endpoints:
                Etcd(ep).call("/v3/maintenance/defragment", {})
            defrag = time.perf_counter() - a
            print("etcd storage after the cell: db %.1f MiB (%.1f MiB of records appended); after delete + compaction"
                  " (%.2f s) + defragment of 3 members (%.2f s): %.2f MiB"
                  % (before / 2**20, len(t) * size / 2**20, compact, defrag, db_size(endpoints) / 2**20), flush=True)


def kafka(bootstrap, n):
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    run = "%d-%d" % (os.getpid(), int(time.time()))
    topic = "surge-cluster-probe-" + run
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    for f in fs.values():
        f.result(10)
    time.sleep(0.5)

    def report(name, t):
        print("kafka %-40s n=%-5d p50 %s ms  p99 %s ms  max %s ms" % (name, len(t), ms(pct(t, 50)), ms(pct(t, 99)), ms(max(t))))

    # 1. one write at a time, acks=all, idempotent producer: what one replicated append costs
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 0})
    t = []
    for i in range(n):
        errs = []
        a = time.perf_counter()
        p.produce(topic, value=b"x" * 128, key=b"m-1", on_delivery=lambda err, msg: errs.append(err))
        p.flush(10)
        t.append(time.perf_counter() - a)
        assert errs == [None], errs
    report("produce acks=all, one in flight", t)

    # 2. the same write inside a transaction (begin, produce, commit); each step reported
    #    on its own, so a broker without one feature still shows the others
    results = {}
    committed = {}
    tid = "surge-probe-" + run

    def step(name, f):
        try:
            out = f()
            results[name] = out if out is not None else "ok"
            return True
        except Exception as ex:  # noqa: BLE001 - a fatal error can surface through a callback
            cause = ex.__cause__ or ex.__context__ or ex
            err = cause.args[0] if isinstance(cause, KafkaException) else cause
            results[name] = "refused: %s" % (err.str() if hasattr(err, "str") else err)
            return False

    tp = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 0})
    if step("init_transactions (InitProducerId)", lambda: tp.init_transactions(10)):
        def txns():
            t = []
            for i in range(max(1, n // 5)):
                a = time.perf_counter()
                tp.begin_transaction()
                tp.produce(topic, value=b"t%d" % i, key=b"m-1")
                tp.commit_transaction(10)
                committed[b"t%d" % i] = True
                t.append(time.perf_counter() - a)
            report("transaction (begin, produce, commit)", t)
        step("commit_transaction (EndTxn)", txns)

        def abort():
            tp.begin_transaction()
            tp.produce(topic, value=b"aborted", key=b"m-1")
            tp.flush(10)
            tp.abort_transaction(10)
        step("abort_transaction", abort)
        # 3. fencing: a second producer with the same transactional.id bumps the epoch; the
        #    first one's next write must be refused by the broker
        tp = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 0})
        tp.init_transactions(10)
        tp2 = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 0})
        step("second producer, same transactional.id", lambda: tp2.init_transactions(10))

        def zombie():
            errs = []
            tp.begin_transaction()
            tp.produce(topic, value=b"zombie", key=b"m-1", on_delivery=lambda err, msg: errs.append(err))
            tp.flush(10)
            if errs and errs[0] is not None:
                return "old epoch's produce refused: %s" % errs[0].str()
            tp.commit_transaction(10)
            return "old epoch's produce ACCEPTED (%s)" % errs
        step("old producer epoch fenced", zombie)

    # 4. read_committed: what a standby rebuilding from the topic sees
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe-rc-" + run, "isolation.level": "read_committed",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    seen = []
    deadline = time.time() + 10
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            if seen:
                break
            continue
        if m.error():
            continue
        seen.append(m.value())
    c.close()
    uncommitted = [v for v in seen if v.startswith(b"t") and not committed.get(v)]
    results["read_committed sees"] = ("%d records; uncommitted transactional records visible: %d; "
                                      "aborted visible: %s; zombie visible: %s") % (
        len(seen), len(uncommitted), b"aborted" in seen, b"zombie" in seen)

    # 5. consumer group: two members, assignment, rebalance when one leaves
    topic2 = topic + "-g"
    for f in admin.create_topics([NewTopic(topic2, num_partitions=4, replication_factor=1)]).values():
        f.result(10)
    time.sleep(0.5)
    assigned = {1: [], 2: []}

    def member():
        return Consumer({"bootstrap.servers": bootstrap, "group.id": "probe-g-" + run,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})

    c1, c2 = member(), member()
    c1.subscribe([topic2], on_assign=lambda c, ps: assigned.__setitem__(1, [x.partition for x in ps]))
    c2.subscribe([topic2], on_assign=lambda c, ps: assigned.__setitem__(2, [x.partition for x in ps]))
    deadline = time.time() + 20
    while time.time() < deadline and not (assigned[1] and assigned[2] and
                                          len(set(assigned[1]) | set(assigned[2])) == 4):
        c1.poll(0.1)
        c2.poll(0.1)
    results["group, two members"] = "member 1 %s, member 2 %s" % (sorted(assigned[1]), sorted(assigned[2]))
    a = time.time()
    c2.close()
    assigned[1] = []
    while time.time() < a + 20 and len(assigned[1]) < 4:
        c1.poll(0.1)
    results["group, member 2 leaves"] = "member 1 has %s after %.2f s" % (sorted(assigned[1]), time.time() - a)
    c1.close()
    for k, v in results.items():
        print("kafka %s: %s" % (k, v))
    admin.delete_topics([topic, topic2])


def main():
    cmd = sys.argv[1]
    if cmd == "etcd-latency":
        etcd_latency(sys.argv[2], int(sys.argv[3]))
    elif cmd == "etcd-hold":
        etcd_hold(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "etcd-take":
        etcd_take(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]),
                  len(sys.argv) > 7 and sys.argv[7] == "keep")
    elif cmd == "etcd-log":
        etcd_log(sys.argv[2].split(","), [int(x) for x in sys.argv[3].split(",")],
                 [int(x) for x in sys.argv[4].split(",")], float(sys.argv[5]))
    elif cmd == "kafka":
        kafka(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit("unknown probe " + cmd)


if __name__ == "__main__":
    main()
