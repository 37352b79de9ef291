-- Users, groups and memberships of every SCIM endpoint ("tenant").
CREATE TABLE scim_users (
    seq BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    user_name_lower TEXT NOT NULL,
    external_id TEXT,
    active BIGINT NOT NULL,
    attributes JSONB NOT NULL,
    created_ms BIGINT NOT NULL,
    modified_ms BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE UNIQUE INDEX scim_users_id ON scim_users (tenant, id);
CREATE UNIQUE INDEX scim_users_user_name ON scim_users (tenant, user_name_lower);
CREATE INDEX scim_users_external_id ON scim_users (tenant, external_id);
CREATE TABLE scim_user_emails (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    value_lower TEXT NOT NULL,
    kind TEXT,
    is_primary BIGINT NOT NULL,
    display TEXT
);
CREATE INDEX scim_user_emails_value ON scim_user_emails (tenant, value_lower);
CREATE INDEX scim_user_emails_user ON scim_user_emails (tenant, user_id);
CREATE TABLE scim_groups (
    seq BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    display_name_lower TEXT NOT NULL,
    external_id TEXT,
    attributes JSONB NOT NULL,
    created_ms BIGINT NOT NULL,
    modified_ms BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE UNIQUE INDEX scim_groups_id ON scim_groups (tenant, id);
CREATE INDEX scim_groups_display_name ON scim_groups (tenant, display_name_lower);
CREATE INDEX scim_groups_external_id ON scim_groups (tenant, external_id);
CREATE TABLE scim_group_members (
    tenant TEXT NOT NULL,
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    member_type TEXT NOT NULL,
    display TEXT,
    position BIGINT NOT NULL,
    PRIMARY KEY (tenant, group_id, member_id)
);
CREATE INDEX scim_group_members_member ON scim_group_members (tenant, member_id);
