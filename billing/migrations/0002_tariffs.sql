-- 0002_tariffs: tariff plan versions, as installed by `occ tariff load` (billing.tariff_store).
-- A tariff file's text is stored once; every plan version it declares points at it. The catalog is
-- rebuilt by parsing the stored texts and resolving their versions together (rating_core).

create table tariff_sources (
    -- hex SHA-256 of the text
    sha256      text primary key,
    -- the file name it was loaded from; the text's parse messages name it
    source_name text not null,
    source      text not null,
    loaded_at   timestamptz not null default now()
);

-- One row per declared (plan, effective_from). A version is immutable once loaded: a changed plan is
-- a new version with a later effective_from. Versions a child derives from its parent's later versions
-- are not rows: they follow from the rows when the catalog is resolved.
create table tariff_versions (
    plan           text not null,
    effective_from timestamptz not null,
    source_name    text not null,
    source_sha256  text not null references tariff_sources (sha256),
    loaded_at      timestamptz not null default now(),
    primary key (plan, effective_from)
);
