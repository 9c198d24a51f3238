-- 0004_billing: what the billing run needs and makes — which operator bills an account, the plan an account
-- had when (for prorated recurring fees), invoices and statements with their lines, gapless numbering.
-- Operators themselves (issuer details, invoice prefix, tax rates) are configuration ([billing] in
-- occ.toml); an invoice keeps a copy of its issuer's details as they were when it was issued.

alter table accounts
    add column operator_id     text not null default 'default',
    -- who the invoices are addressed to
    add column customer_name   text not null default '',
    add column billing_address text not null default '';

-- The plan history of an account: one row per plan it had, ended_at null for the current one.
-- A change ends one row and starts the next at the same instant.
create table account_plans (
    account_id text not null references accounts (account_id),
    plan       text not null,
    started_at timestamptz not null,
    ended_at   timestamptz null check (ended_at is null or ended_at > started_at),
    -- the plan again after the account was closed and reopened: its "once" fees are not charged again
    resumed    boolean not null default false,
    primary key (account_id, started_at)
);

insert into account_plans (account_id, plan, started_at)
select account_id, plan, created_at from accounts;

-- One-time charges an operator adds to an account (installation, equipment); billed once, in the
-- period their charged_on date falls in. Plan fees with period "once" come from the tariff instead.
create table account_charges (
    account_id  text not null references accounts (account_id),
    charge_id   text not null,
    description text not null,
    service     text not null default 'fees',
    amount      bigint not null check (amount > 0),
    charged_on  date not null,
    created_at  timestamptz not null default now(),
    primary key (account_id, charge_id)
);

-- Invoices (postpaid), statements (prepaid) and credit notes. Amounts are micro-units rounded to the
-- currency's cent (10 000 micro-units), so every printed figure adds up exactly.
create table invoices (
    invoice_id   bigserial primary key,
    -- gapless per operator: <prefix><year>-<6 digits>; statements have none
    number       text null unique,
    kind         text not null check (kind in ('invoice', 'statement', 'credit_note')),
    operator_id  text not null,
    account_id   text not null references accounts (account_id),
    -- YYYY-MM of the billing period; a credit note carries its invoice's
    period       text not null check (period ~ '^[0-9]{4}-[0-9]{2}$'),
    period_start date not null,
    period_end   date not null,  -- exclusive
    currency     char(3) not null,
    issued_on    date not null,
    due_on       date null,
    subtotal     bigint not null,
    tax          bigint not null,
    total        bigint not null check (total = subtotal + tax),
    -- statements: the account's money at the period's start and end
    opening      bigint null,
    closing      bigint null,
    -- credit notes: the invoice they correct, and why
    credits_number text null references invoices (number),
    reason       text null,
    -- money received against it (payments, credit notes); open while paid < total
    paid         bigint not null default 0,
    -- credit notes against it
    credited     bigint not null default 0,
    -- postpaid: the period's usage (exact, micro-units) to give back to the live balance once issued
    live_credit  bigint not null default 0,
    -- postpaid: when the period's usage was given back to the live balance (the credit limit then bounds
    -- the next period's unbilled usage); null until the live store took it
    settled_live_at timestamptz null,
    issuer       jsonb not null,
    customer     jsonb not null,
    created_at   timestamptz not null default now()
);

-- A billing run makes one invoice (or statement) per account and period, however often it runs.
create unique index invoices_one_per_period on invoices (account_id, period, kind) where kind <> 'credit_note';
create index invoices_period_idx on invoices (period, operator_id);

-- Lines and taxes are written only together with their invoice, in its transaction, and never change:
-- no foreign key to check on each of their rows (the billing run writes tens of thousands at once).
create table invoice_lines (
    invoice_id  bigint not null,
    line_no     integer not null,
    -- recurring | one_time | usage | credit | topup | refund
    kind        text not null,
    service     text not null,
    description text not null,
    quantity    bigint null,
    unit        text null,
    amount      bigint not null,  -- net, micro-units rounded to the cent
    tax_rate    bigint not null,  -- parts per million: 200000 = 20 %
    primary key (invoice_id, line_no)
);

-- Taxes of an invoice, one row per rate (rounded once per rate, not per line).
create table invoice_taxes (
    invoice_id bigint not null,
    tax_rate   bigint not null,
    base       bigint not null,
    tax        bigint not null,
    primary key (invoice_id, tax_rate)
);

-- The next invoice number per operator and year. A run takes the row lock for the whole transaction
-- that issues invoices, so numbers are gapless (a rolled back run leaves no hole) and concurrent runs
-- queue behind each other.
create table invoice_counters (
    operator_id text not null,
    year        integer not null,
    last_number bigint not null default 0,
    primary key (operator_id, year)
);
