-- 0005_payments: money received (bank statements, payment systems), what it paid, and the dunning steps
-- taken for invoices left unpaid.

create table payments (
    payment_id  bigserial primary key,
    -- the bank's or payment system's reference: importing the same one again does nothing
    reference   text not null unique,
    account_id  text not null references accounts (account_id),
    amount      bigint not null check (amount > 0),
    received_on date not null,
    -- the file it came from
    source      text not null,
    -- postpaid: what no open invoice has taken yet (allocated to the next ones as they are issued)
    unallocated bigint not null check (unallocated >= 0),
    -- prepaid: when the balance engine took it (null: not yet; the next import retries)
    credited_live_at timestamptz null,
    created_at  timestamptz not null default now()
);

create index payments_account_idx on payments (account_id);

create table payment_allocations (
    payment_id bigint not null references payments (payment_id),
    invoice_id bigint not null references invoices (invoice_id),
    amount     bigint not null check (amount > 0),
    allocated_on date not null,
    primary key (payment_id, invoice_id)
);

-- Money given back from an invoice to the payment that paid it (a credit note on a paid invoice): it
-- becomes customer credit again. Allocations are history and stay as they were.
create table payment_reversals (
    payment_id  bigint not null references payments (payment_id),
    invoice_id  bigint not null references invoices (invoice_id),
    amount      bigint not null check (amount > 0),
    reversed_on date not null,
    created_at  timestamptz not null default now()
);

-- When the status last changed (by anyone): dunning reactivates only an account whose status it set last.
alter table accounts add column status_changed_at timestamptz null;

-- One row per dunning step of an invoice: reminder, suspended (the account), reactivated (the account).
create table dunning_events (
    invoice_id  bigint not null references invoices (invoice_id),
    account_id  text not null references accounts (account_id),
    step        text not null check (step in ('reminder', 'suspended', 'reactivated')),
    happened_on date not null,
    -- the instant the step set the account's status (suspended, reactivated); null for reminders
    status_at   timestamptz null,
    created_at  timestamptz not null default now(),
    primary key (invoice_id, step)
);
