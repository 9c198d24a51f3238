-- 0003_ledger: the charge ledger becomes a table partitioned by month, with every field of a charge
-- record, filled by the charge sink (billing.sink) from the Redis charge streams.
--
-- Exactly once: a charge record's entry_id is unique (it starts with the account id and names the
-- request that made it), and a redelivered record carries the same occurred_at, so the primary key
-- (entry_id, occurred_at) refuses a second copy however often the sink replays a batch.
-- There is no foreign key to accounts on purpose: the sink must never stall on a record, and
-- `occ reconcile` names accounts the live store charges but PostgreSQL does not know.

alter table ledger_entries rename to ledger_entries_0001;
drop index ledger_entries_account_idx;

create table ledger_entries (
    entry_id         text not null,
    account_id       text not null,
    -- usage | event | topup | refund | adjustment | expiry | fee
    kind             text not null,
    service          text null,
    -- rating group or service key within a session
    item             text null,
    session_id       text null,
    units            bigint null,
    -- part of units taken from unit buckets (no money)
    bucket_units     bigint null,
    -- signed micro-units: credits positive, debits negative; expiries move none
    amount           bigint not null,
    -- reserved micro-units returned to the balance (expiry records)
    released         bigint null,
    reference        text null,
    -- the account's available and reserved money right after this record
    balance_after    bigint null,
    reserved_after   bigint null,
    flags            text null,
    occurred_at      timestamptz not null,
    -- where the record came from: partition and entry id (ms-seq) of the Redis charge stream; reconcile
    -- uses it to compare PostgreSQL and Redis at one instant while charging goes on
    stream_partition integer null,
    stream_ms        bigint null,
    stream_seq       bigint null,
    recorded_at      timestamptz not null default now(),
    primary key (entry_id, occurred_at)
) partition by range (occurred_at);

-- No index by account: the ledger is read in bulk, a month partition at a time (billing run, statements,
-- reconcile, GL), and every index costs the sink on each of its rows.

-- Month partitions are created on demand (billing.ledger.ensure_partitions) as ledger_entries_YYYY_MM,
-- for months in UTC. Rows of the plain table move over here.
do $$
declare
    month date;
begin
    for month in select distinct date_trunc('month', occurred_at at time zone 'UTC')::date
                 from ledger_entries_0001 loop
        execute format(
            'create table if not exists %I partition of ledger_entries'
            ' for values from (%L) to (%L)',
            'ledger_entries_' || to_char(month, 'YYYY_MM'),
            month::text || ' 00:00:00+00',
            (month + interval '1 month')::date::text || ' 00:00:00+00');
    end loop;
end $$;

insert into ledger_entries (entry_id, account_id, kind, service, units, amount, occurred_at)
select entry_id, account_id, kind, service, units, amount, occurred_at from ledger_entries_0001;

drop table ledger_entries_0001;

-- Stream entries that are not charge records (a bug or a foreign writer): kept here with the reason,
-- so the sink can acknowledge them and go on without losing what they said.
create table ledger_rejects (
    stream_partition integer not null,
    stream_id        text not null,
    fields           text not null,
    reason           text not null,
    recorded_at      timestamptz not null default now(),
    primary key (stream_partition, stream_id)
);
