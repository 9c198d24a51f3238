-- 0001_core: accounts and what hangs off them — identities, unit buckets, top-ups and the charge ledger.
-- PostgreSQL is the system of record; Redis holds the live copy (balances, buckets, identity index) and
-- `occ redis rebuild` recreates it from these tables.

create table accounts (
    account_id   text primary key,
    kind         text not null check (kind in ('prepaid', 'postpaid')),
    currency     char(3) not null check (currency ~ '^[A-Z]{3}$'),
    -- a plan name from tariff_versions; not a foreign key because a plan has many versions
    plan         text not null,
    status       text not null default 'active'
                 check (status in ('active', 'suspended', 'blocked', 'closed')),
    -- micro-units the balance may go below zero; only postpaid accounts have one
    credit_limit bigint not null default 0
                 check (credit_limit >= 0 and (kind = 'postpaid' or credit_limit = 0)),
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);

create table identities (
    kind       text not null check (kind in ('msisdn', 'imsi', 'sip_uri', 'radius_user')),
    value      text not null,
    account_id text not null references accounts (account_id),
    -- RADIUS password (PAP/CHAP need the clear text); only radius_user identities have one
    secret     text null check ((kind = 'radius_user') = (secret is not null)),
    created_at timestamptz not null default now(),
    primary key (kind, value)
);

create index identities_account_idx on identities (account_id);

-- Unit allowances as provisioned. The live remainder is in Redis; consumption reaches PostgreSQL
-- through ledger_entries.
create table buckets (
    bucket_id  text primary key,
    account_id text not null references accounts (account_id),
    service    text not null,
    units      bigint not null check (units > 0),
    expires_at timestamptz not null,
    -- lower is consumed first
    priority   integer not null default 100 check (priority >= 0),
    created_at timestamptz not null default now(),
    -- set once the live store holds the bucket. Redis drops a bucket when it is used up, so adding the
    -- same bucket again would grant it twice: provisioning sends only buckets not yet loaded
    loaded_at  timestamptz null
);

create index buckets_account_idx on buckets (account_id, expires_at);

-- One row per top-up; (account_id, reference) makes a repeated top-up a no-op.
create table topups (
    account_id  text not null references accounts (account_id),
    reference   text not null,
    amount      bigint not null check (amount > 0),
    created_at  timestamptz not null default now(),
    -- set once the live store holds the credit (or a rebuild restored a balance that includes it);
    -- while null, repeating the top-up credits Redis, afterwards a repeat moves nothing
    credited_at timestamptz null,
    primary key (account_id, reference)
);

-- The charge ledger: every committed debit and credit of the live store, amount signed (credits
-- positive, debits negative). Top-ups appear here too (kind 'topup') once the charge sink has copied
-- them, which is why a balance is explained as sum(topups.amount) + sum(amount where kind <> 'topup').
-- The charge sink (a later issue) fills this table from the Redis charge streams and turns it into a
-- table partitioned by month; until then it is a plain table.
create table ledger_entries (
    entry_id    text primary key,
    account_id  text not null references accounts (account_id),
    kind        text not null,
    service     text null,
    units       bigint null,
    amount      bigint not null,
    occurred_at timestamptz not null
);

create index ledger_entries_account_idx on ledger_entries (account_id, occurred_at);
