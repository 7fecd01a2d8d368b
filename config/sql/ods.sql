-- The ODS schema (design.md §3), idempotent: config/ods.yaml runs it at
-- every start (pg_upsert init_files). Money is numeric(20,2), never text.

CREATE SCHEMA IF NOT EXISTS ods_schema;

-- One row per account, joined with its customer.
CREATE TABLE IF NOT EXISTS ods_schema.customer_account (
    account_number   varchar(32)   PRIMARY KEY,
    customer_id      integer       NOT NULL,
    customer_name    varchar(512),
    email            varchar(320),
    mobile           varchar(64),
    account_id       integer       NOT NULL,
    account_status   varchar(32),
    account_balance  numeric(20,2),
    updated_at       timestamp,
    -- The row's version: (account_version, customer_version), compared as a row.
    account_version  bigint        NOT NULL,
    customer_version bigint        NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_account_customer_id ON ods_schema.customer_account (customer_id);

-- One row per source transaction.
CREATE TABLE IF NOT EXISTS ods_schema.t_transaction (
    transaction_id         bigint        PRIMARY KEY,
    transaction_ref_number varchar(64),
    transaction_amount     numeric(20,2),
    transaction_type       varchar(64),
    account_number         varchar(32),
    transaction_date       timestamp,
    customer_id            integer,
    source_version         bigint        NOT NULL
);
CREATE INDEX IF NOT EXISTS t_transaction_customer_date ON ods_schema.t_transaction (customer_id, transaction_date DESC);
CREATE INDEX IF NOT EXISTS t_transaction_account_number ON ods_schema.t_transaction (account_number);

-- One row per customer with at least one account or transaction.
CREATE TABLE IF NOT EXISTS ods_schema.t_financial_insights (
    customer_id              integer       PRIMARY KEY,
    total_balance            numeric(20,2) NOT NULL,
    average_monthly_spending numeric(20,2) NOT NULL,
    updated_at               timestamptz   NOT NULL
);

-- refresh_financial_insights recomputes the insights of the given customers
-- (design.md §5) from the two other tables; pg_upsert calls it in the
-- transaction of the writes that changed them (after_batch).
--   total_balance: the sum of the customer's account balances (0 if none);
--   average_monthly_spending: with L the month (UTC) of the latest
--   transaction, F of the earliest, S = max(F, L - 11 months): the sum of
--   abs(amount) of spending transactions (type, case-insensitive, in
--   spending_types) dated in months S..L, divided by the number of months
--   S..L, rounded half up to cents; 0.00 without transactions.
CREATE OR REPLACE FUNCTION ods_schema.refresh_financial_insights(ids integer[], spending_types text)
RETURNS void LANGUAGE sql AS $$
    WITH wanted AS (
        SELECT DISTINCT unnest(ids) AS customer_id
    ), types AS (
        SELECT lower(btrim(t)) AS t FROM unnest(string_to_array(spending_types, ',')) t
    ), balances AS (
        SELECT customer_id, sum(account_balance) AS total
        FROM ods_schema.customer_account WHERE customer_id = ANY(ids) GROUP BY customer_id
    ), span AS (
        SELECT customer_id,
               date_trunc('month', max(transaction_date)) AS last_month,
               greatest(date_trunc('month', min(transaction_date)),
                        date_trunc('month', max(transaction_date)) - interval '11 months') AS first_month
        FROM ods_schema.t_transaction WHERE customer_id = ANY(ids) GROUP BY customer_id
    ), spending AS (
        SELECT s.customer_id,
               round(coalesce(sum(abs(t.transaction_amount)) FILTER (WHERE lower(t.transaction_type) IN (SELECT t FROM types)), 0)
                     / ((extract(year FROM s.last_month) - extract(year FROM s.first_month)) * 12
                        + extract(month FROM s.last_month) - extract(month FROM s.first_month) + 1), 2) AS average
        FROM span s
        JOIN ods_schema.t_transaction t ON t.customer_id = s.customer_id
             AND t.transaction_date >= s.first_month AND t.transaction_date < s.last_month + interval '1 month'
        GROUP BY s.customer_id, s.first_month, s.last_month
    ), computed AS (
        SELECT w.customer_id, coalesce(b.total, 0) AS total_balance, coalesce(sp.average, 0) AS average_monthly_spending
        FROM wanted w
        LEFT JOIN balances b ON b.customer_id = w.customer_id
        LEFT JOIN spending sp ON sp.customer_id = w.customer_id
        WHERE b.customer_id IS NOT NULL OR EXISTS (SELECT 1 FROM span x WHERE x.customer_id = w.customer_id)
    ), upserted AS (
        INSERT INTO ods_schema.t_financial_insights AS i (customer_id, total_balance, average_monthly_spending, updated_at)
        SELECT customer_id, total_balance, average_monthly_spending, now() FROM computed
        ON CONFLICT (customer_id) DO UPDATE SET total_balance = EXCLUDED.total_balance,
            average_monthly_spending = EXCLUDED.average_monthly_spending, updated_at = EXCLUDED.updated_at
        WHERE (i.total_balance, i.average_monthly_spending) IS DISTINCT FROM (EXCLUDED.total_balance, EXCLUDED.average_monthly_spending)
        RETURNING customer_id
    )
    DELETE FROM ods_schema.t_financial_insights i
    WHERE i.customer_id = ANY(ids) AND i.customer_id NOT IN (SELECT customer_id FROM computed);
$$;
