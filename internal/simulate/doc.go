// Package simulate produces Debezium-faithful change-data-capture traffic
// for the seed system's three source tables (T_Customers, T_Accounts,
// T_Transactions), and computes the ODS state that the traffic must produce.
// `odsflow simulate` is its command; tests of the pipeline use it as an
// encoder independent of odsflow's own decoders.
//
// # API
//
//   - Plan (and Events, its streaming form) generates the change events of
//     a Config, deterministically from Config.Seed, without I/O.
//   - Expect (and ExpectEvents, over a sequence) computes the ODS state
//     (design §3–§5) from events alone.
//   - Run registers the schemas, creates the topics and produces the
//     events; Register and Encoder are its parts.
//
// # Wire format
//
// As Debezium's PostgreSQL connector with Confluent's AvroConverter writes
// it:
//
//   - Topics <prefix>.T_Customers, .T_Accounts, .T_Transactions; Run creates
//     missing ones with 3 partitions.
//   - Value schemas: the seed's, byte for byte (schemas/, copies of
//     ../shared/fixtures/debezium-seed/), registered under <topic>-value.
//     Another topic prefix renames the Avro namespaces (characters Avro does
//     not allow become '_'). Money "decimal" makes the money columns
//     (T_Accounts.account_balance, T_Transactions.transaction_amount)
//     numeric(20,2): bytes with the decimal logical type, scale 2,
//     precision 20, connect.name org.apache.kafka.connect.data.Decimal.
//   - Layout "3" is Debezium 2.7+/3.x, checked against Debezium's
//     SchemaFactory and a 3.5 connector's output: the envelope's fields are
//     before, after, source, transaction, op, ts_ms, ts_us, ts_ns, where
//     ts_us and ts_ns are optional int64 (["null","long"], default null) and
//     the envelope's connect.version is 2; source gains ts_us and ts_ns
//     (optional int64 too, right after sequence) and connect.version 1, and
//     its snapshot enum lists true, first, first_in_data_collection,
//     last_in_data_collection, last, false, incremental. Events carry all
//     three timestamps.
//   - Key schemas: a record <prefix>.<Table>.Key with the field id (int,
//     connect.default 0, as the value's id), connect.name set, registered
//     under <topic>-key.
//   - Keys and values: byte 0x00, the schema id (4 bytes big-endian), the
//     Avro binary encoding (hamba/avro from Go structs). Records are
//     partitioned by murmur2 of the key bytes, as the Java producer does. A
//     delete is followed by a tombstone: the same key, a nil value.
//   - Columns: timestamps are MicroTimestamps (µs, the wall clock read as
//     UTC); money with "int" is whole units.
//   - source: version 2.5.4.Final or 3.0.8.Final, connector postgresql, name
//     and db the topic prefix up to its last dot, schema the part after it
//     ("public" when there is no dot), txId, lsn, sequence
//     ["<last commit lsn>","<lsn>"], ts_ms the commit time (snapshot: the
//     read time). xmin and transaction are null. The envelope's ts_ms is
//     the connector's (simulated) processing time, a little later.
//
// # Traffic
//
// The simulated database's clock starts at 2026-01-15T09:00:00Z (fixed, so
// that a seed always gives the same bytes).
//
//   - Snapshot: Config.Customers customers with 1–3 accounts each and 0–6
//     transactions per account that takes transactions (account 1 always
//     takes them and has at least one), read table by table
//     (T_Accounts, T_Customers, T_Transactions) as op "r". Every snapshot
//     row has the same source.lsn and txId; source.snapshot is "true" and
//     "last" on the very last row (layout "3": also "first",
//     "first_in_data_collection", "last_in_data_collection" as Debezium 3
//     marks them).
//   - Streaming: Config.Events changes, each in its own source transaction
//     (a cascading delete shares one), LSNs strictly increasing, all above
//     the snapshot's: customer inserts and updates (email, mobile, last
//     name; updated_at always), account inserts and updates (balance,
//     sometimes status; updated_at always), accounts moving to another
//     existing customer (customer_id changes), transaction inserts, deletes
//     of transactions, accounts and customers (op "d": after null, before
//     only the key, other columns at their zero value or null, as under
//     REPLICA IDENTITY DEFAULT; updates have no before, for the same reason).
//   - Transactions: types debit, credit, withdrawal, deposit, mostly lower
//     case, some upper or title case; amounts mostly positive, 15%
//     negative; half of the streamed ones dated now, the others and the
//     snapshot's spread over the 14 months before.
//   - Early transactions: now and then an account is announced: a
//     transaction of it is produced 10–59 events before the account's insert
//     (its LSN is lower too: the source has no foreign key), and more may
//     follow before the insert. A consumer reading the topics sees the
//     transaction before its account.
//
// # Rules that keep the outcome well-defined
//
// The ODS state must not depend on how a consumer interleaves the three
// topics (only each partition is ordered), so the traffic never does what
// would make it depend on that:
//
//   - An account that has, or will have, transactions ("transactional",
//     decided when it is created; 30% are not) is never moved to another
//     customer and never deleted, and neither is its customer: a
//     transaction's account_number and customer_id are resolved once.
//   - Only accounts without transactions move or are deleted.
//   - A customer is deleted only if none of its accounts has transactions
//     and no account ever moved from or to it; its accounts are deleted
//     first, in the same source transaction, then the customer.
//   - Only transactions of accounts already inserted are deleted.
//   - Transactions are never updated; account numbers never change; ids are
//     never reused; nothing refers to a deleted row again.
//   - Every announced account is inserted before the traffic ends.
//
// # The model
//
// Expect depends only on the last change (highest LSN) of each row, which is
// what any correct consumer converges to; see Expect for the exact
// definitions of the three tables.
package simulate
